"""``model-garden demo``: the whole pipeline on a fresh machine, offline, on CPU.

Makes the synthetic vehicle-registration forms (without the schema pasted into the
prompts: the grammar enforces it, and the forms are half as long), runs a short
``compare`` of response-only loss against the default recipe's strategy with the
embedded SmolLM2-135M, decodes the held-out forms under the schema and grounded in each
form's text, with per-value confidence, and prints the comparison table, the report
path and the review page of the selective arm's predictions. Sized for 2 CPU cores: 8 minutes after setup on a 2-core AMD EPYC without bf16
(measured 2026-12-05; 20 steps of each arm take about 135 s). The numbers of so short a
run say that the pipeline works, not which strategy wins, nor how well the confidence is
calibrated (no calibration split here): see docs/results/ for that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from model_garden.data.forms import make_forms
from model_garden.evaluation.review import write_review
from model_garden.experiments.compare import CompareConfig, compare
from model_garden.experiments.options import DemoConfig
from model_garden.training.config import TrainConfig


def demo(cfg: DemoConfig, *, console: Console | None = None) -> dict[str, Any]:
    """Run the demo (and write ``OUT/review.html``); returns the comparison summary."""
    console = console or Console(stderr=True)
    out = Path(cfg.out)
    data = out / "forms"
    # Without the schema pasted into the prompts (the grammar enforces it), a form is about
    # 500 tokens instead of 1,000: twice the examples per second of training.
    sizes = make_forms(data, n=cfg.forms, seed=cfg.seed, schema_in_prompt=False)
    console.print(f"made {sum(sizes.values())} synthetic forms in {data} ({sizes})")
    train = TrainConfig.from_options(
        base_model=cfg.base_model,
        dataset=str(data / "text" / "train.jsonl"),
        eval_dataset=str(data / "text" / "test.jsonl"),
        max_steps=cfg.max_steps,
        batch_size=cfg.batch_size,
        lr=1e-3,
        eval_steps=max(cfg.max_steps // 2, 1),
        # The demo decodes the held-out forms once, at the end; decoding them at every
        # evaluation too would double its time on 2 cores.
        eval_generate=0,
        save_steps=cfg.max_steps,
        logging_steps=5,
        report_to="none",
        seed=cfg.seed,
        # Memory is no concern at batch 2; recomputing activations would cost a quarter of the time.
        gradient_checkpointing=False,
    )
    compare_cfg = CompareConfig(
        train=train,
        strategies=["none", cfg.strategy],
        seeds=[cfg.seed],
        out=str(out / "compare"),
        decodings=cfg.decodings,
        predict_limit=cfg.eval_examples,
        predict_batch_size=cfg.eval_examples,
        max_new_tokens=cfg.max_new_tokens,
    )
    summary = compare(compare_cfg, console=console)
    # What a reviewer would get: the selective arm's last decoding, least confident first.
    run = Path(compare_cfg.run_config(cfg.strategy, cfg.seed).run.output)
    write_review(run / f"preds-{cfg.decodings[-1]}.jsonl", compare_cfg.judged_on, out / "review.html")
    return summary
