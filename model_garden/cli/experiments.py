"""``model-garden compare`` (the A/B of loss strategies) and ``model-garden demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from model_garden.cli.common import console, user_errors


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def compare(
    dataset: Annotated[str, typer.Option(help="Training JSONL")],
    eval_dataset: Annotated[str, typer.Option(help="Held-out JSONL: value loss during training, decoding at the end")],
    out: Annotated[Path, typer.Option(help="Output folder (runs, report.md, plots)")] = Path("outputs/compare"),
    strategies: Annotated[str, typer.Option(help="Comma-separated; the first is the baseline")] = "none,conservative,moderate,aggressive",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds; one run per strategy and seed")] = "0,1",
    config: Annotated[Optional[Path], typer.Option(help="YAML of training options shared by all runs")] = None,
    base_model: Annotated[Optional[str], typer.Option(help="Base model (default smollm2-135m)")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Optimizer steps per run (overrides --epochs)")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Epochs per run")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Examples per micro-batch")] = None,
    grad_accum: Annotated[Optional[int], typer.Option(help="Micro-batches per optimizer step")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Truncate examples to this many tokens")] = None,
    eval_steps: Annotated[Optional[int], typer.Option(help="Value-loss evaluation every N steps")] = None,
    lora_r: Annotated[Optional[int], typer.Option(help="LoRA rank")] = None,
    group_by_length: Annotated[Optional[bool], typer.Option(help="Batch examples of similar length together")] = None,
    semantic_patterns: Annotated[Optional[list[str]], typer.Option(help="Regex for a 'custom' strategy")] = None,
    decodings: Annotated[str, typer.Option(help="constrained,free")] = "constrained,free",
    predict_limit: Annotated[Optional[int], typer.Option(help="Decode only the first N eval examples")] = None,
    predict_batch_size: Annotated[int, typer.Option(help="Prompts decoded together")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Generation budget per reply")] = 256,
    target_loss: Annotated[Optional[float], typer.Option(help="Value loss for steps-to-target (default: baseline's best)")] = None,
    report_only: Annotated[bool, typer.Option(help="Train nothing: report the finished runs, list the missing ones")] = False,
) -> None:
    """Train each strategy from identical weights and data order, per seed; compare value
    loss, steps to target and decoded extraction quality (constrained and free)."""
    with user_errors():
        from model_garden.experiments.compare import CompareConfig
        from model_garden.experiments.compare import compare as run_compare
        from model_garden.experiments.report import rich_table
        from model_garden.training.config import load_config

        overrides = dict(
            dataset=dataset, eval_dataset=eval_dataset, base_model=base_model, max_steps=max_steps, epochs=epochs,
            batch_size=batch_size, grad_accum=grad_accum, lr=lr, max_length=max_length, eval_steps=eval_steps,
            lora_r=lora_r, semantic_patterns=semantic_patterns, group_by_length=group_by_length,
        )
        train_cfg = load_config(config, overrides)
        cfg = CompareConfig(
            train=train_cfg,
            strategies=_csv(strategies),
            seeds=[int(s) for s in _csv(seeds)],
            out=str(out),
            decodings=_csv(decodings),
            predict_limit=predict_limit,
            predict_batch_size=predict_batch_size,
            max_new_tokens=max_new_tokens,
            target_loss=target_loss,
            report_only=report_only,
        )
        summary = run_compare(cfg, console=console)
        console.print(rich_table(summary))
        console.print(f"report: {out / 'report.md'}")


def demo(
    out: Annotated[Path, typer.Option(help="Output folder")] = Path("outputs/demo"),
    strategy: Annotated[str, typer.Option(help="Selective strategy compared with response-only loss")] = "aggressive",
    max_steps: Annotated[int, typer.Option(help="Optimizer steps per run")] = 20,
    forms: Annotated[int, typer.Option(help="Synthetic forms to generate (80/10/10 split)")] = 80,
    eval_examples: Annotated[int, typer.Option(help="Held-out forms decoded at the end")] = 8,
) -> None:
    """The whole pipeline offline on CPU: synthetic forms, a short A/B of response-only
    vs a selective strategy with SmolLM2-135M, constrained decoding, the comparison."""
    with user_errors():
        from model_garden.experiments.demo import DemoConfig
        from model_garden.experiments.demo import demo as run_demo
        from model_garden.experiments.report import rich_table

        cfg = DemoConfig(out=str(out), strategy=strategy, max_steps=max_steps, forms=forms, eval_examples=eval_examples)
        summary = run_demo(cfg, console=console)
        console.print(rich_table(summary))
        console.print(f"report: {out / 'compare' / 'report.md'}")


def register(app: typer.Typer) -> None:
    """Add ``compare`` and ``demo``."""
    app.command("compare")(compare)
    app.command("demo")(demo)
