"""A comparison's summary: means over seeds, paired differences against the baseline with
intervals and verdicts, per-field McNemar tests, and a second decoding paired with the
first on the same runs; ``experiments.report`` renders it.

Levels are means over seeds with a 95% Student-t interval. Differences pair every
strategy with the baseline (the first strategy) on the same seed and, for decoded
metrics, on the same eval records (``experiments.stats``): a hierarchical bootstrap over
seeds and records where the runs' evaluation reports hold per-record outcomes, a
Student-t interval over seeds otherwise (run-level numbers, or reports written before
per-record outcomes existed). Each difference gets a verdict in words.

Steps to convergence: the first evaluation at which decoded field accuracy reaches 95%
of the run's final value (``decoded_eval`` in the run's ``metrics.json``); for runs
without decoded evaluation, the first at which the eval value loss is within 1/0.95 of
its final value. The summary says which.

Try it: ``python -c "import json; print(json.load(open('OUT/summary.json'))['table'].keys())"`` after ``compare``.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from statistics import mean
from typing import Any

import torch

from model_garden.experiments.paired import Run, across_decodings, field_tests, paired_eval
from model_garden.experiments.stats import BOOT_SEED, N_BOOT, interval, seed_difference, steps_to_convergence, verdict

# (key, label, higher is better)
EVAL_METRICS = [
    ("json_valid", "JSON valid", True),
    ("schema_valid", "schema valid", True),
    ("field_accuracy", "field accuracy", True),
    ("field_accuracy_filled", "field accuracy (gold not null)", True),
    ("f1", "F1 (Donut)", True),
    ("ted_accuracy", "TED accuracy", True),
    ("anls", "ANLS", True),
    ("cer", "CER", False),
    ("hallucination_rate", "hallucination rate", False),
    ("omission_rate", "omission rate", False),
    ("outside_source_rate", "string values not in the source", False),
    ("confidence_auroc", "confidence AUROC (right vs wrong)", True),
    ("confidence_ece", "confidence ECE", False),
    ("review_coverage_99", "accepted without review at 99% precision", True),
]
TRAIN_METRICS = [
    ("final_value_loss", "eval value loss (final)", False),
    ("best_value_loss", "eval value loss (best)", False),
    ("steps_to_target", "steps to baseline's best", False),
    ("steps_to_convergence", "steps to convergence", False),
    ("train_runtime_s", "train time (s)", False),
]
CONVERGENCE = {
    "decoded": "steps to 95% of final decoded field accuracy",
    "loss": "steps to within 1/0.95 of final eval value loss",
}


def _steps_to(curve: list[list[float]], target: float | None) -> int | None:
    if target is None:
        return None
    for step, loss in curve:
        if loss <= target + 1e-12:
            return int(step)
    return None


def _decoded_curve(run: Run) -> list[list[float]]:
    """``[[step, field accuracy], ...]`` from ``decoded_eval: [[step, {metrics}], ...]``."""
    return [[step, m["field_accuracy"]] for step, m in run["train"].get("decoded_eval") or [] if m.get("field_accuracy") is not None]


def _run_row(run: Run, base_run: Run | None, target_loss: float | None, basis: str) -> dict[str, Any]:
    curve = run["train"].get("eval_value_loss", [])
    base_curve = (base_run or {}).get("train", {}).get("eval_value_loss", [])
    target = target_loss if target_loss is not None else (min(v for _, v in base_curve) if base_curve else None)
    row = {
        "final_value_loss": curve[-1][1] if curve else None,
        "best_value_loss": min(v for _, v in curve) if curve else None,
        "steps_to_target": _steps_to(curve, target),
        "steps_to_convergence": steps_to_convergence(_decoded_curve(run))
        if basis == "decoded"
        else steps_to_convergence(curve, higher_is_better=False),
        "train_runtime_s": run["train"].get("train_runtime_s"),
    }
    for decoding, metrics in run["eval"].items():
        for key, _, _ in EVAL_METRICS:
            row[f"{decoding}/{key}"] = metrics.get(key)
        row[f"{decoding}/per_field"] = {k: v["accuracy"] for k, v in metrics.get("per_field", {}).items()}
    return row


def units(key: str) -> dict[str, Any]:
    """How a metric is shown: ``scale``, ``digits`` and ``unit`` of its numbers and differences."""
    if "/" in key:  # decoded-output metrics are rates
        return {"scale": 100, "digits": 1, "unit": "points"}
    if key.startswith("steps"):
        return {"scale": 1, "digits": 0, "unit": "steps"}
    return {"scale": 1, "digits": 0, "unit": "s"} if key == "train_runtime_s" else {"scale": 1, "digits": 3, "unit": ""}


def _scored_clusters(runs: list[Run], clusters: dict[int, str] | None) -> int | None:
    """How many clusters the scored eval records fall in (``None``: not clustered)."""
    if not clusters:
        return None
    lines = {line for r in runs for table in (r.get("records") or {}).values() for line in table.get("line", [])}
    return len({clusters[line] for line in lines if line in clusters})


def summarize(
    runs: list[Run], strategies: list[str], *, target_loss: float | None = None, clusters: dict[int, str] | None = None
) -> dict[str, Any]:
    """Aggregate runs per strategy and decoding, and pair each strategy with the baseline.

    Args:
        runs: From ``compare.run_one`` (``records``: per decoding, the evaluation's
            per-record table, when there is one).
        strategies: Their order; the first is the baseline.
        target_loss: Fixed target for steps-to-target; default per seed the baseline's best.
        clusters: Per eval record (dataset line), its cluster: the bootstrap then draws
            clusters of records (``experiments.stats``).
    """
    baseline = strategies[0]
    by_key = {(r["strategy"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    basis = "decoded" if runs and all(_decoded_curve(r) for r in runs) else "loss"
    per_run = {
        (strategy, seed): _run_row(run, by_key.get((baseline, seed)), target_loss, basis) for (strategy, seed), run in by_key.items()
    }
    decodings = sorted({d for r in runs for d in r["eval"]}, key=lambda d: (d != "constrained", d))
    higher = {k: h for k, _, h in TRAIN_METRICS} | {f"{d}/{k}": h for d in decodings for k, _, h in EVAL_METRICS}
    table: dict[str, dict[str, Any]] = {}
    tests: dict[str, dict[str, Any]] = {}
    for strategy in strategies:
        paired_seeds = [s for s in seeds if (strategy, s) in by_key and (baseline, s) in by_key]
        mine, theirs = [by_key[(strategy, s)] for s in paired_seeds], [by_key[(baseline, s)] for s in paired_seeds]
        table[strategy] = {}
        for key, better in higher.items():
            values = [per_run.get((strategy, s), {}).get(key) for s in seeds]
            m, ci = interval(values)
            cell: dict[str, Any] = {"mean": m, "ci": ci, "n": sum(v is not None for v in values), "diff": None}
            if strategy != baseline:
                d = paired_eval(mine, theirs, *key.split("/"), clusters) if "/" in key and paired_seeds else None
                if d is None:
                    a, b = ([per_run[(x, s)].get(key) for s in paired_seeds] for x in (strategy, baseline))
                    d = seed_difference([x - y for x, y in zip(a, b) if x is not None and y is not None])
                cell["diff"] = d.diff if d else None
                cell["paired"] = d.as_dict() if d else None
                cell["verdict"] = verdict(d, strategy, higher_is_better=better, **units(key))
            table[strategy][key] = cell
        if strategy != baseline and paired_seeds:
            tests[strategy] = {d: field_tests(mine, theirs, d) for d in decodings}

    def curves(get: Any) -> dict[str, dict[int, Any]]:
        return {s: {k: get(by_key[(s, k)]) for k in seeds if (s, k) in by_key} for s in strategies}

    across: dict[str, dict[str, Any]] = {}
    for strategy in strategies:
        own = [by_key[(strategy, s)] for s in seeds if (strategy, s) in by_key]
        for d in decodings[1:]:
            if res := across_decodings(own, d, decodings[0], clusters):
                across.setdefault(strategy, {})[d] = {
                    "differences": {
                        k: diff.as_dict() | {"verdict": verdict(diff, d, higher_is_better=True, **units(f"{d}/{k}"))} if diff else None
                        for k, diff in res["differences"].items()
                    },
                    "mcnemar": res["mcnemar"],
                }

    return {
        "baseline": baseline,
        "strategies": strategies,
        "seeds": seeds,
        "decodings": decodings,
        "convergence": CONVERGENCE[basis],
        "bootstrap": {"replicates": N_BOOT, "seed": BOOT_SEED, "clusters": _scored_clusters(runs, clusters)},
        "table": table,
        "mcnemar": tests,
        "across_decodings": across,
        "runs": {f"{s}-seed{k}": v for (s, k), v in per_run.items()},
        "eval_curves": curves(lambda r: r["train"].get("eval_value_loss", [])),
        "train_curves": curves(lambda r: r["train"].get("loss", [])),
        "decoded_curves": curves(_decoded_curve),
        "per_field": {
            s: {d: _mean_fields([per_run[(s, k)].get(f"{d}/per_field", {}) for k in seeds if (s, k) in per_run]) for d in decodings}
            for s in strategies
        },
        # Wrong fields by kind (evaluation.errors), mean count per run.
        "errors": {
            s: {d: _mean_fields([c for k in seeds if (c := (by_key.get((s, k)) or {}).get("errors", {}).get(d))]) for d in decodings}
            for s in strategies
        },
        "hardware": hardware(),
    }


def _mean_fields(rows: list[dict[str, float | None]]) -> dict[str, float]:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return {k: mean(v for r in rows if (v := r.get(k)) is not None) for k in keys if any(r.get(k) is not None for r in rows)}


def hardware() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "torch": torch.__version__}
