"""Summaries of a comparison: means over seeds, paired differences against the baseline
with intervals and verdicts, per-field McNemar tests, a Markdown report and PNG plots.

Levels are means over seeds with a 95% Student-t interval. Differences pair every
strategy with the baseline (the first strategy) on the same seed and, for decoded
metrics, on the same eval records (``experiments.stats``): a hierarchical bootstrap over
seeds and records where the runs' evaluation reports hold per-record outcomes, a
Student-t interval over seeds otherwise (run-level numbers, or reports written before
per-record outcomes existed). Each difference gets a verdict in words.

Steps to convergence: the first evaluation at which decoded field accuracy reaches 95%
of the run's final value (``decoded_eval`` in the run's ``metrics.json``); for runs
without decoded evaluation, the first at which the eval value loss is within 1/0.95 of
its final value. The report says which.

Try it: ``python -c "import json; from model_garden.experiments.report import markdown; print(markdown(json.load(open('OUT/summary.json'))))"``
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from statistics import mean
from typing import Any

import torch
from rich.table import Table

from model_garden.experiments.paired import Run, across_decodings, field_tests, paired_eval
from model_garden.experiments.plots import plot
from model_garden.experiments.stats import BOOT_SEED, N_BOOT, interval, seed_difference, steps_to_convergence, verdict

__all__ = ["interval", "markdown", "rich_table", "summarize", "write_report"]

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


def _units(key: str) -> dict[str, Any]:
    if "/" in key:  # decoded-output metrics are rates
        return {"scale": 100, "digits": 1, "unit": "points"}
    if key.startswith("steps"):
        return {"scale": 1, "digits": 0, "unit": "steps"}
    return {"scale": 1, "digits": 0, "unit": "s"} if key == "train_runtime_s" else {"scale": 1, "digits": 3, "unit": ""}


def summarize(runs: list[Run], strategies: list[str], *, target_loss: float | None = None) -> dict[str, Any]:
    """Aggregate runs per strategy and decoding, and pair each strategy with the baseline.

    Args:
        runs: From ``compare.run_one`` (``records``: per decoding, the evaluation's
            per-record table, when there is one).
        strategies: Their order; the first is the baseline.
        target_loss: Fixed target for steps-to-target; default per seed the baseline's best.
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
                d = paired_eval(mine, theirs, *key.split("/")) if "/" in key and paired_seeds else None
                if d is None:
                    a, b = ([per_run[(x, s)].get(key) for s in paired_seeds] for x in (strategy, baseline))
                    d = seed_difference([x - y for x, y in zip(a, b) if x is not None and y is not None])
                cell["diff"] = d.diff if d else None
                cell["paired"] = d.as_dict() if d else None
                cell["verdict"] = verdict(d, strategy, higher_is_better=better, **_units(key))
            table[strategy][key] = cell
        if strategy != baseline and paired_seeds:
            tests[strategy] = {d: field_tests(mine, theirs, d) for d in decodings}

    def curves(get: Any) -> dict[str, dict[int, Any]]:
        return {s: {k: get(by_key[(s, k)]) for k in seeds if (s, k) in by_key} for s in strategies}

    across: dict[str, dict[str, Any]] = {}
    for strategy in strategies:
        own = [by_key[(strategy, s)] for s in seeds if (strategy, s) in by_key]
        for d in decodings[1:]:
            if res := across_decodings(own, d, decodings[0]):
                across.setdefault(strategy, {})[d] = {
                    "differences": {
                        k: diff.as_dict() | {"verdict": verdict(diff, d, higher_is_better=True, **_units(f"{d}/{k}"))} if diff else None
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
        "bootstrap": {"replicates": N_BOOT, "seed": BOOT_SEED},
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


def _fmt(cell: dict[str, Any], key: str, runs: int) -> str:
    """``mean ± CI (paired difference [95% interval])`` in the metric's units, and on how
    many of the strategy's ``runs`` the number exists when not on all of them."""
    m = cell["mean"]
    if m is None:
        return "–"
    u = _units(key)
    scale, digits = u["scale"], u["digits"]
    text = f"{m * scale:.{digits}f}"
    if cell["ci"] is not None:
        text += f" ± {cell['ci'] * scale:.{digits}f}"
    paired = cell.get("paired")
    if paired:
        text += f" ({paired['diff'] * scale:+.{digits}f}"
        text += f" [{paired['low'] * scale:+.{digits}f}, {paired['high'] * scale:+.{digits}f}])" if paired["low"] is not None else ")"
    if cell["n"] < runs:
        text += f" ({cell['n']} of {runs} runs)"
    return text


def _label(summary: dict[str, Any], key: str) -> str:
    labels = {k: (lab, h) for k, lab, h in TRAIN_METRICS}
    labels |= {f"{d}/{k}": (f"{d}: {lab}", h) for d in summary["decodings"] for k, lab, h in EVAL_METRICS}
    label, higher = labels[key]
    if key == "steps_to_convergence":
        label = summary.get("convergence", label)
    return f"{label} {'↑' if higher else '↓'}"


def _keys(summary: dict[str, Any]) -> list[str]:
    return [k for k, _, _ in TRAIN_METRICS] + [f"{d}/{k}" for d in summary["decodings"] for k, _, _ in EVAL_METRICS]


def _run_counts(summary: dict[str, Any]) -> dict[str, int]:
    return {s: sum(name.rsplit("-seed", 1)[0] == s for name in summary["runs"]) for s in summary["strategies"]}


def _row(summary: dict[str, Any], key: str) -> list[str]:
    counts = _run_counts(summary)
    return [_fmt(summary["table"][s][key], key, counts[s]) for s in summary["strategies"]]


def _headers(summary: dict[str, Any]) -> list[str]:
    """Strategy names, with their number of seeds when strategies differ in it."""
    counts = _run_counts(summary)
    if len(set(counts.values())) == 1:
        return list(summary["strategies"])
    return [f"{s} ({n} seed{'s' if n != 1 else ''})" for s, n in counts.items()]


def rich_table(summary: dict[str, Any]) -> Table:
    """The comparison as a rich table."""
    table = Table(title=f"mean ± 95% CI over seeds {summary['seeds']} (paired difference vs {summary['baseline']} [95% interval])")
    table.add_column("metric")
    for header in _headers(summary):
        table.add_column(header, justify="right")
    for key in _keys(summary):
        table.add_row(_label(summary, key), *_row(summary, key))
    return table


def _method(summary: dict[str, Any]) -> str:
    boot = summary.get("bootstrap", {})
    return (
        "Decoded metrics: the difference of the metric pooled over seeds and eval records, with the 2.5th and 97.5th "
        f"percentiles of {boot.get('replicates')} hierarchical bootstrap replicates (seeds drawn with replacement, then eval "
        "records with replacement within each drawn seed; the same draw for both strategies, so each is paired with the "
        f"baseline on the same seed and record; generator seed {boot.get('seed')}). With one seed only record variance is "
        "counted, and with two or three the seed level under-counts it. Run-level numbers (value loss, steps, time) and "
        "runs without per-record outcomes: mean of per-seed differences with a Student-t interval. A difference is "
        "*resolved* when its 95% interval excludes 0. Where it is not, \"could have detected\" is the smallest true "
        "difference a two-sided test at alpha 0.05 would find with 80% power: (z(0.975) + z(0.80)) x SE = 2.80 x the "
        "bootstrap standard error (t quantiles for Student-t intervals)."
    )


def _verdicts(summary: dict[str, Any]) -> list[str]:
    baseline, lines = summary["baseline"], []
    for strategy in summary["strategies"][1:]:
        lines += [f"### `{strategy}` against `{baseline}`", "", "| metric | verdict |", "|---|---|"]
        lines += [f"| {_label(summary, k)} | {summary['table'][strategy][k].get('verdict', '–')} |" for k in _keys(summary)]
        lines.append("")
    return lines


def _mcnemar_tables(summary: dict[str, Any]) -> list[str]:
    tests, lines = summary.get("mcnemar", {}), []
    strategies = [s for s in summary["strategies"][1:] if s in tests]
    for decoding in summary["decodings"]:
        fields = list(dict.fromkeys(f for s in strategies for f in tests[s].get(decoding, {})))
        if not fields:
            continue
        lines += [
            f"### Per-field exact McNemar tests, {decoding} decoding",
            "",
            f"b = (seed, record) pairs the strategy got right and `{summary['baseline']}` wrong, c = the reverse; "
            "two-sided exact p (binomial test on b + c), per field, not adjusted for the number of fields.",
            "",
            "| field | " + " | ".join(f"`{s}`: b / c, p" for s in strategies) + " |",
            "|---|" + "---:|" * len(strategies),
        ]
        for name in fields:
            cells = [tests[s][decoding].get(name) for s in strategies]
            lines.append(f"| {name} | " + " | ".join(f"{c['b']} / {c['c']}, p = {c['p']:.3g}" if c else "–" for c in cells) + " |")
        lines.append("")
    return lines


def _across_decodings(summary: dict[str, Any]) -> list[str]:
    labels, lines = {k: label for k, label, _ in EVAL_METRICS}, []
    for strategy, per_decoding in summary.get("across_decodings", {}).items():
        base = summary["decodings"][0]
        for decoding, res in per_decoding.items():
            lines += [
                f"### `{decoding}` against `{base}` decoding, on the `{strategy}` runs",
                "",
                "The same models on the same records, so only the decoding differs; the same bootstrap and McNemar "
                f"tests as above, with `{decoding}` in the strategy's place and `{base}` in the baseline's.",
                "",
                "| metric | verdict |",
                "|---|---|",
            ]
            lines += [f"| {labels[k]} | {cell['verdict'] if cell else 'no paired data'} |" for k, cell in res["differences"].items()]
            lines += ["", "| field | b / c, p |", "|---|---:|"]
            lines += [f"| {name} | {t['b']} / {t['c']}, p = {t['p']:.3g} |" for name, t in res["mcnemar"].items()]
            lines.append("")
    return lines


def markdown(summary: dict[str, Any]) -> str:
    """The report body."""
    hw = summary["hardware"]
    cfg = summary.get("config", {})
    # TrainConfig.to_dict() groups its fields (model, lora, data, optim, run, ...).
    train = {k: v for group in cfg.get("train", {}).values() if isinstance(group, dict) for k, v in group.items()}
    lines = [
        "# Strategy comparison",
        "",
        f"- training data: `{train.get('dataset')}`; eval data: `{train.get('eval_dataset')}`"
        + (f"; judged on `{cfg['test_dataset']}`" if cfg.get("test_dataset") else "")
        + (f"; confidence calibrated on `{cfg['calibration_dataset']}`" if cfg.get("calibration_dataset") else ""),
        f"- base model: `{train.get('base_model')}`; LoRA r={train.get('lora_r')}"
        + (" (full fine-tune)" if train.get("full_finetune") else "")
        + f"; lr {train.get('lr')}; batch {train.get('batch_size')} x accumulation {train.get('grad_accum')}; "
        + (f"{train.get('max_steps')} steps" if (train.get("max_steps") or -1) > 0 else f"{train.get('epochs')} epoch(s)"),
        f"- seeds: {summary['seeds']}; evaluation every {train.get('eval_steps')} steps"
        + (f" (decoding {train['eval_generate']} examples)" if train.get("eval_generate") else "")
        + f"; final decoding: {cfg.get('predict_limit') or 'all'} examples, max new tokens {cfg.get('max_new_tokens')}",
        f"- hardware: {hw['cpu']}, {hw['cores']} cores, GPU: {hw['gpu'] or 'none'}, torch {hw['torch']}",
        "",
        f"Cells: mean ± 95% Student-t interval over seeds; in brackets the paired difference vs `{summary['baseline']}` "
        "with its 95% interval (see *Paired differences*). Rates in percent, differences in percentage points. "
        "↑ higher is better, ↓ lower is better. An output that is not one JSON object scores zero on every field. "
        "The eval value loss is measured on the value tokens of the eval set for every strategy, so it is comparable "
        "across masks. \"k of n runs\": the number exists on k of the strategy's runs only (steps to the baseline's "
        "best: the other runs never reached it).",
        "",
    ]
    if summary.get("shared"):
        pairs = ", ".join(f"{a} = {b}" for a, b in summary["shared"].items())
        lines += [
            "Shared runs (the masks are equal on every training example: same ids, labels, weights and token "
            f"classes, so training would compute the same thing): {pairs}.",
            "",
        ]
    if summary.get("missing"):
        lines += [f"Not run (so left out of every mean): {', '.join(summary['missing'])}.", ""]
    lines += ["| metric | " + " | ".join(_headers(summary)) + " |", "|---|" + "---:|" * len(summary["strategies"])]
    for k in _keys(summary):
        lines.append(f"| {_label(summary, k)} | " + " | ".join(_row(summary, k)) + " |")
    lines += ["", "## Paired differences", "", _method(summary), ""] + _verdicts(summary) + _mcnemar_tables(summary)
    lines += _across_decodings(summary)
    lines += ["## Plots", "", "![eval value loss](loss_curves.png)", "", "![per-field accuracy](field_accuracy.png)", ""]
    if any(c for per_seed in summary.get("decoded_curves", {}).values() for c in per_seed.values()):
        lines += ["![decoded field accuracy during training](decoded_curves.png)", ""]
    return "\n".join(lines)


def write_report(summary: dict[str, Any], out: Path) -> Path:
    """Write ``summary.json``, the plots and ``report.md``; return the report's path."""
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    plot(summary, out)
    path = out / "report.md"
    path.write_text(markdown(summary), encoding="utf-8")
    return path
