"""An honest A/B of loss strategies: ``model-garden compare``.

For every seed, every strategy trains from the same initial weights, on the same data in
the same order, with the same hyper-parameters; only the mask differs. Each run logs the
value-token eval loss on a fixed schedule, then predicts the eval set with and without
constrained decoding and is evaluated. Runs already finished are reused, so an
interrupted comparison continues where it stopped.

Layout::

    OUT/runs/<strategy>-seed<k>/        training output (see training/run.py)
    OUT/runs/<strategy>-seed<k>/preds-{constrained,free}.jsonl, eval-{...}.json
    OUT/runs/<strategy>-seed<k>/same_as.json   instead, when the run is shared
    OUT/report.md, OUT/summary.json, OUT/*.png

Try it: ``model-garden compare --dataset T.jsonl --eval-dataset E.jsonl --strategies none,aggressive --seeds 0 --max-steps 20 --out runs/ab``
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from model_garden.training.config import TrainConfig

DECODINGS = ("constrained", "free")


@dataclass
class CompareConfig:
    """What to compare.

    Attributes:
        train: Training options shared by every run (dataset, eval set, steps, ...).
        strategies: Mask strategies; the first is the baseline.
        seeds: One run per strategy and seed.
        out: Output folder.
        decodings: ``constrained`` and/or ``free`` decoding for the final evaluation.
        predict_limit: Decode only the first N eval examples (None: all).
        predict_batch_size: Prompts decoded together.
        max_new_tokens: Generation budget per reply.
        target_loss: Eval value loss a run must reach for "steps to target"; default the
            best value the baseline reaches with the same seed.
        report_only: Train and decode nothing: report the runs already finished (trained,
            decoded and evaluated) and list the missing ones in the report.
    """

    train: TrainConfig
    strategies: list[str] = field(default_factory=lambda: ["none", "conservative", "moderate", "aggressive"])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    out: str = "outputs/compare"
    decodings: list[str] = field(default_factory=lambda: list(DECODINGS))
    predict_limit: int | None = None
    predict_batch_size: int = 8
    max_new_tokens: int = 256
    target_loss: float | None = None
    report_only: bool = False

    def __post_init__(self) -> None:
        if not self.train.eval_dataset:
            raise ValueError("compare needs --eval-dataset (the held-out set every run is judged on)")
        if not self.strategies:
            raise ValueError("--strategies must name at least one strategy")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"--strategies has duplicates: {self.strategies}")
        for d in self.decodings:
            if d not in DECODINGS:
                raise ValueError(f"--decodings must be among {', '.join(DECODINGS)}; got {d!r}")
        for s in self.strategies:  # fail before hours of training, not after
            self.run_config(s, self.seeds[0] if self.seeds else 0)

    def run_config(self, strategy: str, seed: int) -> TrainConfig:
        """The training configuration of one run."""
        return dataclasses.replace(
            self.train,
            mask_strategy=strategy,
            use_selective_loss=False,
            seed=seed,
            output=str(Path(self.out) / "runs" / f"{strategy}-seed{seed}"),
            resume=None,
        )


def _run_done(folder: Path) -> bool:
    return (folder / "metrics.json").is_file()


def _run_finished(cfg: CompareConfig, strategy: str, seed: int) -> bool:
    folder = Path(cfg.run_config(strategy, seed).output)
    return _run_done(folder) and all((folder / f"eval-{d}.json").is_file() for d in cfg.decodings)


@functools.lru_cache(maxsize=2)
def _processing(base_model: str) -> Any:
    from model_garden.models import load_processing

    return load_processing(base_model)


_FINGERPRINTS: dict[str, str] = {}


def mask_fingerprint(run_cfg: TrainConfig) -> str:
    """The fingerprint of a run's training masks: from its ``mask_stats.json`` when it has
    one, else computed by building every training example (no model is loaded)."""
    from model_garden.training.run import masked_train_data

    if run_cfg.output in _FINGERPRINTS:
        return _FINGERPRINTS[run_cfg.output]
    stats_path = Path(run_cfg.output) / "mask_stats.json"
    if stats_path.is_file():
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
        if stats.get("mask_fingerprint"):
            return stats["mask_fingerprint"]
    data = masked_train_data(run_cfg, _processing(run_cfg.base_model))
    _FINGERPRINTS[run_cfg.output] = data.prescan(skip_bad_lines=True).fingerprint
    return _FINGERPRINTS[run_cfg.output]


def _shared_with(cfg: CompareConfig, strategy: str, seed: int) -> str | None:
    """The finished run of an earlier strategy (same seed) whose masks equal this one's."""
    folder = Path(cfg.run_config(strategy, seed).output)
    if (folder / "same_as.json").is_file():
        return json.loads((folder / "same_as.json").read_text(encoding="utf-8"))["run"]
    if _run_done(folder) or cfg.train.vision:  # its own results; or too costly to check (every image)
        return None
    mine = None
    for other in cfg.strategies[: cfg.strategies.index(strategy)]:
        if not _run_finished(cfg, other, seed) or (Path(cfg.run_config(other, seed).output) / "same_as.json").is_file():
            continue
        mine = mine or mask_fingerprint(cfg.run_config(strategy, seed))
        theirs = mask_fingerprint(cfg.run_config(other, seed))
        if mine == theirs:
            folder.mkdir(parents=True, exist_ok=True)
            record = {"run": f"{other}-seed{seed}", "mask_fingerprint": mine}
            (folder / "same_as.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
            return record["run"]
    return None


def run_one(cfg: CompareConfig, strategy: str, seed: int, console: Console) -> dict[str, Any]:
    """Train (unless done or shared), predict and evaluate one strategy and seed."""
    shared = _shared_with(cfg, strategy, seed)
    if shared:
        console.print(f"[dim]{strategy} · seed {seed}: same masks as {shared} on every training example; sharing its run[/]")
        other = shared.rsplit("-seed", 1)[0]
        return {**run_one(cfg, other, seed, console), "strategy": strategy, "same_as": shared}
    from model_garden.evaluation import evaluate_files
    from model_garden.inference.predict import predict
    from model_garden.training.run import train

    run_cfg = cfg.run_config(strategy, seed)
    folder = Path(run_cfg.output)
    if _run_done(folder):
        console.print(f"[dim]reusing {folder}[/]")
    else:
        if (folder / "checkpoints").is_dir() and any((folder / "checkpoints").iterdir()):
            run_cfg = dataclasses.replace(run_cfg, resume="latest")
        console.rule(f"{strategy} · seed {seed}")
        result = train(run_cfg, console=console)
        if result.interrupted:
            raise KeyboardInterrupt(f"interrupted during {folder}; rerun compare to continue")
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    run = {"strategy": strategy, "seed": seed, "train": metrics, "eval": {}, "predict": {}}
    for decoding in cfg.decodings:
        preds, report = folder / f"preds-{decoding}.jsonl", folder / f"eval-{decoding}.json"
        if not report.is_file():
            console.print(f"predicting {strategy} · seed {seed} · {decoding} decoding")
            stats = predict(
                folder,
                run_cfg.eval_dataset,
                preds,
                constrained=decoding == "constrained",
                batch_size=cfg.predict_batch_size,
                max_new_tokens=cfg.max_new_tokens,
                limit=cfg.predict_limit,
            )
            evaluated = evaluate_files(preds, run_cfg.eval_dataset, predicted_only=cfg.predict_limit is not None)
            evaluated["predict"] = stats
            report.write_text(json.dumps(evaluated, indent=2, ensure_ascii=False), encoding="utf-8")
        evaluated = json.loads(report.read_text(encoding="utf-8"))
        run["eval"][decoding] = evaluated["metrics"]
        run["predict"][decoding] = evaluated.get("predict", {})
    return run


def compare(cfg: CompareConfig, *, console: Console | None = None) -> dict[str, Any]:
    """Run every strategy and seed, then write the report.

    Returns:
        The summary written to ``OUT/summary.json`` (see ``experiments.report``).
    """
    from model_garden.experiments.report import summarize, write_report

    console = console or Console(stderr=True)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    planned = [(strategy, seed) for seed in cfg.seeds for strategy in cfg.strategies]
    missing = [
        f"{s}-seed{k}" for s, k in planned if cfg.report_only and not _run_finished(cfg, s, k) and not _shared_with(cfg, s, k)
    ]
    if missing:
        console.print(f"[yellow]report only: not run yet: {', '.join(missing)}[/]")
    runs = [run_one(cfg, s, k, console) for s, k in planned if f"{s}-seed{k}" not in missing]
    if not runs:
        raise ValueError(f"--report-only: no finished run under {out / 'runs'}")
    summary = summarize(runs, cfg.strategies, target_loss=cfg.target_loss)
    summary["missing"] = missing
    summary["shared"] = {f"{r['strategy']}-seed{r['seed']}": r["same_as"] for r in runs if "same_as" in r}
    summary["config"] = {
        "strategies": cfg.strategies,
        "seeds": cfg.seeds,
        "decodings": cfg.decodings,
        "predict_limit": cfg.predict_limit,
        "max_new_tokens": cfg.max_new_tokens,
        "train": cfg.train.to_dict(),
    }
    write_report(summary, out)
    return summary
