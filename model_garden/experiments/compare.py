"""An honest A/B of loss strategies: ``model-garden compare``.

For every seed, every strategy trains from the same initial weights, on the same data in
the same order, with the same hyper-parameters; only the mask differs. Each run logs the
value-token eval loss on a fixed schedule, then predicts the eval set with each decoding
(``--decodings``: the schema's grammar, grounded in the source, or free) and is
evaluated, confidence included (calibrated on ``--calibration-dataset`` when given). Runs already finished are reused, so an
interrupted comparison continues where it stopped. Runs go one after another here, or
in parallel as jobs of a launcher (``--launcher local|slurm``, ``experiments.launch``).

Layout::

    OUT/runs/<strategy>-seed<k>/        training output (see training/run.py)
    OUT/runs/<strategy>-seed<k>/preds-{constrained,grounded,free}.jsonl, eval-{...}.json
    OUT/runs/<strategy>-seed<k>/calibration-{constrained,grounded}.json (with --calibration-dataset)
    OUT/runs/<strategy>-seed<k>/same_as.json   instead, when the run is shared
    OUT/report.md, OUT/summary.json, OUT/*.png
    OUT/launcher/<job>/                 each job's logs, with --launcher local|slurm (experiments/launch.py)

Try it: ``model-garden compare --dataset T.jsonl --eval-dataset E.jsonl --strategies none,aggressive --seeds 0 --max-steps 20 --out runs/ab``
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from model_garden.evaluation import evaluate_files
from model_garden.evaluation.calibration import confidence_metrics, evaluate_confidence, fit_calibration
from model_garden.evaluation.decoded import decoded_eval_factory
from model_garden.experiments.launch import launch
from model_garden.experiments.options import CompareOptions, LaunchOptions, arm_folder, parse_arm
from model_garden.experiments.paired import record_clusters
from model_garden.experiments.report import write_report
from model_garden.experiments.summary import summarize
from model_garden.inference.predict import predict
from model_garden.masking.scan_report import FINGERPRINT_VERSION, fingerprint_version
from model_garden.models import load_processing
from model_garden.training.config import TrainConfig
from model_garden.training.run import masked_train_data, train

@dataclass(kw_only=True)
class CompareConfig(CompareOptions):
    """What to compare (``CompareOptions``) and the training options every run shares.

    Attributes:
        train: Training options shared by every run (dataset, eval set, steps, ...).
        launch: Where the runs execute (inline, or jobs of a launcher).
    """

    train: TrainConfig
    launch: LaunchOptions = field(default_factory=LaunchOptions)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.train.data.eval_dataset:
            raise ValueError("compare needs --eval-dataset (the held-out set every run is judged on)")
        for s in self.strategies:  # fail before hours of training, not after
            self.run_config(s, self.seeds[0] if self.seeds else 0)

    @property
    def judged_on(self) -> str:
        """The set the final decodings are scored on."""
        return self.test_dataset or self.train.data.eval_dataset

    def run_config(self, arm: str, seed: int) -> TrainConfig:
        """The training configuration of one run of an arm (see ``parse_arm``)."""
        strategy, weight, schedule, epochs = parse_arm(arm)
        overrides: dict[str, Any] = {}
        if epochs is not None:
            overrides.update(epochs=epochs, max_steps=-1)
        if weight is not None:
            overrides.update(structural_weight=weight, structural_weight_schedule=None)
        if schedule is not None:
            overrides.update(structural_weight_schedule=schedule)
        return self.train.replace(
            mask_strategy=strategy,
            use_selective_loss=False,
            seed=seed,
            output=str(Path(self.out) / "runs" / f"{arm_folder(arm)}-seed{seed}"),
            resume=None,
            **overrides,
        )


def _run_done(folder: Path) -> bool:
    return (folder / "metrics.json").is_file()


def _run_finished(cfg: CompareConfig, strategy: str, seed: int) -> bool:
    folder = Path(cfg.run_config(strategy, seed).run.output)
    return _run_done(folder) and all((folder / f"eval-{d}.json").is_file() for d in cfg.decodings)


@functools.lru_cache(maxsize=2)
def _processing(base_model: str) -> Any:
    return load_processing(base_model)


_FINGERPRINTS: dict[tuple[str, int], str] = {}


def _stored_fingerprint(folder: Path) -> str | None:
    stats_path = folder / "mask_stats.json"
    if stats_path.is_file():
        return json.loads(stats_path.read_text(encoding="utf-8")).get("mask_fingerprint")
    return None


def _built_fingerprint(run_cfg: TrainConfig, version: int = FINGERPRINT_VERSION) -> str:
    """The fingerprint (in ``version``) of the masks this version builds for a run's
    config: every training example is built (no model is loaded)."""
    key = (run_cfg.run.output, version)
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = masked_train_data(run_cfg, _processing(run_cfg.model.base_model)).fingerprint(version)
    return _FINGERPRINTS[key]


def mask_fingerprint(run_cfg: TrainConfig) -> str:
    """The fingerprint of a run's training masks: from its ``mask_stats.json`` when it
    stored one in the current version, else built."""
    stored = _stored_fingerprint(Path(run_cfg.run.output))
    return stored if stored and fingerprint_version(stored) == FINGERPRINT_VERSION else _built_fingerprint(run_cfg)


def _check_reused(run_cfg: TrainConfig, strategy: str) -> None:
    """Refuse a finished run whose masks are not the ones this version builds for its
    config (the mask code changed since it trained): its results would be reported under
    a strategy that no longer trains those tokens."""
    folder = Path(run_cfg.run.output)
    stored = _stored_fingerprint(folder)
    if stored is None or run_cfg.model.vision:  # too costly to rebuild (every image)
        return
    built = _built_fingerprint(run_cfg, fingerprint_version(stored))
    if stored != built:
        raise ValueError(
            f"{folder}: trained on other masks than this version of model-garden builds for "
            f"{strategy} (mask fingerprint {stored[:12]}, now {built[:12]}); its results would not "
            "describe that strategy. Move the folder away to train it again, or compare into a new --out."
        )


def _shared_with(cfg: CompareConfig, strategy: str, seed: int) -> str | None:
    """The finished run of an earlier strategy (same seed) whose masks equal this one's."""
    folder = Path(cfg.run_config(strategy, seed).run.output)
    if (folder / "same_as.json").is_file():
        return json.loads((folder / "same_as.json").read_text(encoding="utf-8"))["run"]
    if _run_done(folder) or cfg.train.model.vision:  # its own results; or too costly to check (every image)
        return None
    mine = None
    for other in cfg.strategies[: cfg.strategies.index(strategy)]:
        if not _run_finished(cfg, other, seed) or (Path(cfg.run_config(other, seed).run.output) / "same_as.json").is_file():
            continue
        # A schedule changes the weights during training, and epochs its length, which the masks do not show.
        theirs_cfg, mine_cfg = cfg.run_config(other, seed), cfg.run_config(strategy, seed)
        if (theirs_cfg.mask.structural_weight_schedule, theirs_cfg.optim) != (mine_cfg.mask.structural_weight_schedule, mine_cfg.optim):
            continue
        mine = mine or mask_fingerprint(cfg.run_config(strategy, seed))
        theirs = mask_fingerprint(cfg.run_config(other, seed))
        if mine == theirs:
            folder.mkdir(parents=True, exist_ok=True)
            record = {"run": f"{other}-seed{seed}", "mask_fingerprint": mine}
            (folder / "same_as.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
            return record["run"]
    return None


def _to_launch(cfg: CompareConfig) -> list[tuple[str, int]]:
    """The runs a launcher must execute: unfinished ones that will not share an earlier
    arm's run. Decided before any of them runs, by the rule ``_shared_with`` applies
    after (equal masks, schedule and optimizer), so that the gathering shares exactly
    these."""
    todo = []
    for seed in cfg.seeds:
        own: list[tuple[Any, ...]] = []  # (fingerprint, schedule, optim) of each arm with a run of its own
        for arm in cfg.strategies:
            run_cfg = cfg.run_config(arm, seed)
            folder = Path(run_cfg.run.output)
            if (folder / "same_as.json").is_file():
                continue
            key = None
            if len(cfg.strategies) > 1 and not cfg.train.model.vision:  # vision runs never share (see _shared_with)
                key = (mask_fingerprint(run_cfg), run_cfg.mask.structural_weight_schedule, run_cfg.optim)
                if key in own and not _run_done(folder):
                    continue
            own.append(key)
            if not _run_finished(cfg, arm, seed):
                todo.append((arm, seed))
    return todo


def run_one(cfg: CompareConfig, strategy: str, seed: int, console: Console, threads: int | None = None) -> dict[str, Any]:
    """Train (unless done or shared), predict and evaluate one strategy and seed;
    ``threads`` for decoding (default: the cores not busy)."""
    shared = _shared_with(cfg, strategy, seed)
    if shared:
        console.print(f"[dim]{strategy} · seed {seed}: same masks as {shared} on every training example; sharing its run[/]")
        other = shared.rsplit("-seed", 1)[0]
        return {**run_one(cfg, other, seed, console, threads), "strategy": strategy, "same_as": shared}
    run_cfg = cfg.run_config(strategy, seed)
    folder = Path(run_cfg.run.output)
    if _run_done(folder):
        _check_reused(run_cfg, strategy)
        console.print(f"[dim]reusing {folder}[/]")
    else:
        if (folder / "checkpoints").is_dir() and any((folder / "checkpoints").iterdir()):
            run_cfg = run_cfg.replace(resume="latest")
        elif folder.is_dir():  # a run that stopped before its first checkpoint: start it again
            run_cfg = run_cfg.replace(overwrite=True)
        console.rule(f"{strategy} · seed {seed}")
        result = train(run_cfg, console=console, decoded_eval_factory=decoded_eval_factory)
        if result.interrupted:
            raise KeyboardInterrupt(f"interrupted during {folder}; rerun compare to continue")
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    run = {"strategy": strategy, "seed": seed, "train": metrics, "eval": {}, "predict": {}, "records": {}, "errors": {}}
    for decoding in cfg.decodings:
        preds, report = folder / f"preds-{decoding}.jsonl", folder / f"eval-{decoding}.json"
        if not report.is_file():
            decode = functools.partial(
                predict, folder, constrained=decoding != "free", grounded=decoding == "grounded",
                batch_size=cfg.predict_batch_size, max_new_tokens=cfg.max_new_tokens, threads=threads,
            )
            calibration = None
            if cfg.calibration_dataset and decoding != "free":
                calibration = folder / f"calibration-{decoding}.json"
                if not calibration.is_file():
                    console.print(f"calibrating {strategy} · seed {seed} · {decoding} decoding")
                    decode(cfg.calibration_dataset, folder / f"preds-calibration-{decoding}.jsonl", calibration=None)
                    fit_calibration(folder / f"preds-calibration-{decoding}.jsonl", cfg.calibration_dataset).save(calibration)
            console.print(f"predicting {strategy} · seed {seed} · {decoding} decoding")
            stats = decode(cfg.judged_on, preds, limit=cfg.predict_limit, calibration=calibration)
            evaluated = evaluate_files(preds, cfg.judged_on, predicted_only=cfg.predict_limit is not None)
            evaluated["confidence"] = evaluate_confidence(preds, evaluated)
            evaluated["metrics"] |= confidence_metrics(evaluated)
            evaluated["predict"] = stats
            report.write_text(json.dumps(evaluated, indent=2, ensure_ascii=False), encoding="utf-8")
        evaluated = json.loads(report.read_text(encoding="utf-8"))
        if "records" not in evaluated and preds.is_file():
            # written before per-record outcomes (and before invalid outputs scored zero):
            # re-score the stored predictions; nothing is decoded again
            stats = evaluated.get("predict", {})
            evaluated = evaluate_files(preds, cfg.judged_on, predicted_only=evaluated.get("predicted_only", False))
            evaluated["predict"] = stats
            report.write_text(json.dumps(evaluated, indent=2, ensure_ascii=False), encoding="utf-8")
        if "errors" not in evaluated and preds.is_file():  # written before error kinds: sorted now, not stored
            evaluated["errors"] = evaluate_files(preds, cfg.judged_on, predicted_only=evaluated.get("predicted_only", False))["errors"]
        run["eval"][decoding] = evaluated["metrics"]
        run["records"][decoding] = evaluated.get("records")
        run["errors"][decoding] = (evaluated.get("errors") or {}).get("counts")
        run["predict"][decoding] = evaluated.get("predict", {})
    return run


def compare(cfg: CompareConfig, *, console: Console | None = None) -> dict[str, Any]:
    """Run every strategy and seed, then write the report.

    Returns:
        The summary written to ``OUT/summary.json`` (see ``experiments.report``).
    """
    console = console or Console(stderr=True)
    clusters = record_clusters(cfg.judged_on, cfg.cluster_by) if cfg.cluster_by else None  # a bad key fails before training
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    planned = [(strategy, seed) for seed in cfg.seeds for strategy in cfg.strategies]
    missing = [
        f"{s}-seed{k}" for s, k in planned if cfg.report_only and not _run_finished(cfg, s, k) and not _shared_with(cfg, s, k)
    ]
    if missing:
        console.print(f"[yellow]report only: not run yet: {', '.join(missing)}[/]")
    threads, previous = cfg.launch.arm_cpus, torch.get_num_threads()
    if cfg.launch.launcher != "inline" and not cfg.report_only:
        launch(cfg.launch, out, _to_launch(cfg), run_one, cfg, console)
    elif threads:
        torch.set_num_threads(threads)
    try:
        # Under a launcher every run is finished by now, and each is gathered (reused) here.
        runs = [run_one(cfg, s, k, console, threads) for s, k in planned if f"{s}-seed{k}" not in missing]
    finally:
        torch.set_num_threads(previous)  # the caller's threads, as they were
    if not runs:
        raise ValueError(f"--report-only: no finished run under {out / 'runs'}")
    summary = summarize(runs, cfg.strategies, target_loss=cfg.target_loss, clusters=clusters)
    summary["missing"] = missing
    summary["shared"] = {f"{r['strategy']}-seed{r['seed']}": r["same_as"] for r in runs if "same_as" in r}
    summary["config"] = {
        "strategies": cfg.strategies,
        "seeds": cfg.seeds,
        "decodings": cfg.decodings,
        "calibration_dataset": cfg.calibration_dataset,
        "test_dataset": cfg.test_dataset,
        "cluster_by": cfg.cluster_by,
        "predict_limit": cfg.predict_limit,
        "max_new_tokens": cfg.max_new_tokens,
        "train": cfg.train.to_dict(),
        "launch": dataclasses.asdict(cfg.launch),
    }
    write_report(summary, out)
    return summary
