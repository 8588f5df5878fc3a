"""Summaries of a comparison: means with 95% intervals over seeds, paired differences
against the baseline, a Markdown report and PNG plots.

Intervals are Student-t intervals over seeds (with two seeds they are wide, which is the
honest answer); a difference is the mean over seeds of (strategy - baseline) with the
same seed, so seed-to-seed variation common to both cancels.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from rich.table import Table

# (key, label, higher is better)
EVAL_METRICS = [
    ("json_valid", "JSON valid", True),
    ("schema_valid", "schema valid", True),
    ("field_accuracy", "field accuracy", True),
    ("f1", "F1 (Donut)", True),
    ("ted_accuracy", "TED accuracy", True),
    ("anls", "ANLS", True),
    ("cer", "CER", False),
    ("hallucination_rate", "hallucination rate", False),
    ("omission_rate", "omission rate", False),
]
TRAIN_METRICS = [
    ("final_value_loss", "eval value loss (final)", False),
    ("best_value_loss", "eval value loss (best)", False),
    ("steps_to_target", "steps to baseline's best", False),
    ("train_runtime_s", "train time (s)", False),
]


def interval(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and the half-width of its 95% Student-t interval (None with one value)."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], None
    from scipy.stats import t

    return mean(values), float(t.ppf(0.975, len(values) - 1)) * stdev(values) / math.sqrt(len(values))


def _steps_to(curve: list[list[float]], target: float | None) -> int | None:
    if target is None:
        return None
    for step, loss in curve:
        if loss <= target + 1e-12:
            return int(step)
    return None


def summarize(runs: list[dict[str, Any]], strategies: list[str], *, target_loss: float | None = None) -> dict[str, Any]:
    """Aggregate runs per strategy and decoding.

    Args:
        runs: From ``compare.run_one``.
        strategies: Their order; the first is the baseline.
        target_loss: Fixed target for steps-to-target; default per seed the baseline's best.
    """
    baseline = strategies[0]
    by_key = {(r["strategy"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    per_run: dict[tuple[str, int], dict[str, Any]] = {}
    for (strategy, seed), run in by_key.items():
        curve = run["train"].get("eval_value_loss", [])
        base_curve = by_key.get((baseline, seed), {}).get("train", {}).get("eval_value_loss", [])
        target = target_loss if target_loss is not None else (min(v for _, v in base_curve) if base_curve else None)
        row = {
            "final_value_loss": curve[-1][1] if curve else None,
            "best_value_loss": min(v for _, v in curve) if curve else None,
            "steps_to_target": _steps_to(curve, target),
            "train_runtime_s": run["train"].get("train_runtime_s"),
        }
        for decoding, metrics in run["eval"].items():
            for key, _, _ in EVAL_METRICS:
                row[f"{decoding}/{key}"] = metrics.get(key)
            row[f"{decoding}/per_field"] = {k: v["accuracy"] for k, v in metrics.get("per_field", {}).items()}
        per_run[(strategy, seed)] = row
    decodings = sorted({d for r in runs for d in r["eval"]}, key=lambda d: (d != "constrained", d))
    keys = [k for k, _, _ in TRAIN_METRICS] + [f"{d}/{k}" for d in decodings for k, _, _ in EVAL_METRICS]
    table: dict[str, dict[str, Any]] = {}
    for strategy in strategies:
        table[strategy] = {}
        for key in keys:
            values = [per_run.get((strategy, s), {}).get(key) for s in seeds]
            m, ci = interval(values)
            diffs = [
                per_run[(strategy, s)][key] - per_run[(baseline, s)][key]
                for s in seeds
                if (strategy, s) in per_run and (baseline, s) in per_run
                and per_run[(strategy, s)].get(key) is not None and per_run[(baseline, s)].get(key) is not None
            ]
            dm, dci = interval(diffs) if strategy != baseline else (None, None)
            reached = sum(v is not None for v in values)
            table[strategy][key] = {"mean": m, "ci": ci, "diff": dm, "diff_ci": dci, "n": reached}
    curves = {
        strategy: {seed: by_key[(strategy, seed)]["train"].get("eval_value_loss", []) for seed in seeds if (strategy, seed) in by_key}
        for strategy in strategies
    }
    train_curves = {
        strategy: {seed: by_key[(strategy, seed)]["train"].get("loss", []) for seed in seeds if (strategy, seed) in by_key}
        for strategy in strategies
    }
    per_field = {
        strategy: {
            d: _mean_fields([per_run[(strategy, s)].get(f"{d}/per_field", {}) for s in seeds if (strategy, s) in per_run])
            for d in decodings
        }
        for strategy in strategies
    }
    return {
        "baseline": baseline,
        "strategies": strategies,
        "seeds": seeds,
        "decodings": decodings,
        "table": table,
        "runs": {f"{s}-seed{k}": v for (s, k), v in per_run.items()},
        "eval_curves": curves,
        "train_curves": train_curves,
        "per_field": per_field,
        "hardware": hardware(),
    }


def _mean_fields(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for r in rows for k in r})
    return {k: mean(r[k] for r in rows if k in r) for k in keys}


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
    import torch

    return {"cpu": model, "cores": os.cpu_count(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "torch": torch.__version__}


def _fmt(cell: dict[str, Any], key: str) -> str:
    m = cell["mean"]
    if m is None:
        return "–"
    pct = "/" in key  # decoded-output metrics are rates
    scale = 100 if pct else 1
    digits = 1 if pct else (0 if key in ("steps_to_target", "train_runtime_s") else 3)
    text = f"{m * scale:.{digits}f}"
    if cell["ci"] is not None:
        text += f" ± {cell['ci'] * scale:.{digits}f}"
    if cell["diff"] is not None:
        text += f" ({cell['diff'] * scale:+.{digits}f}"
        text += f" ± {cell['diff_ci'] * scale:.{digits}f})" if cell["diff_ci"] is not None else ")"
    return text


def _rows(summary: dict[str, Any]) -> list[tuple[str, list[str]]]:
    rows = []
    for key, label, better in TRAIN_METRICS:
        rows.append((f"{label} {'↓' if not better else '↑'}", [_fmt(summary["table"][s][key], key) for s in summary["strategies"]]))
    for decoding in summary["decodings"]:
        for key, label, better in EVAL_METRICS:
            full = f"{decoding}/{key}"
            rows.append((f"{decoding}: {label} {'↑' if better else '↓'}", [_fmt(summary["table"][s][full], full) for s in summary["strategies"]]))
    return rows


def _headers(summary: dict[str, Any]) -> list[str]:
    """Strategy names, with their number of seeds when strategies differ in it."""
    counts = {s: sum(name.rsplit("-seed", 1)[0] == s for name in summary["runs"]) for s in summary["strategies"]}
    if len(set(counts.values())) == 1:
        return list(summary["strategies"])
    return [f"{s} ({n} seed{'s' if n != 1 else ''})" for s, n in counts.items()]


def rich_table(summary: dict[str, Any]) -> Table:
    """The comparison as a rich table."""
    table = Table(title=f"mean ± 95% CI over seeds {summary['seeds']} (difference vs {summary['baseline']})")
    table.add_column("metric")
    for header in _headers(summary):
        table.add_column(header, justify="right")
    for label, cells in _rows(summary):
        table.add_row(label, *cells)
    return table


def markdown(summary: dict[str, Any]) -> str:
    """The report body."""
    hw = summary["hardware"]
    cfg = summary.get("config", {})
    train = cfg.get("train", {})
    lines = [
        "# Strategy comparison",
        "",
        f"- training data: `{train.get('dataset')}`; eval data: `{train.get('eval_dataset')}`",
        f"- base model: `{train.get('base_model')}`; LoRA r={train.get('lora_r')}"
        + (" (full fine-tune)" if train.get("full_finetune") else "")
        + f"; lr {train.get('lr')}; batch {train.get('batch_size')} x accumulation {train.get('grad_accum')}; "
        + (f"{train.get('max_steps')} steps" if (train.get("max_steps") or -1) > 0 else f"{train.get('epochs')} epoch(s)"),
        f"- seeds: {summary['seeds']}; decoded eval examples: {cfg.get('predict_limit') or 'all'}; max new tokens {cfg.get('max_new_tokens')}",
        f"- hardware: {hw['cpu']}, {hw['cores']} cores, GPU: {hw['gpu'] or 'none'}, torch {hw['torch']}",
        "",
        f"Cells: mean ± 95% Student-t interval over seeds; in brackets the paired difference vs `{summary['baseline']}`. "
        "Rates in percent. ↑ higher is better, ↓ lower is better. The eval value loss is measured on the value tokens "
        "of the eval set for every strategy, so it is comparable across masks.",
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
    lines += [
        "| metric | " + " | ".join(_headers(summary)) + " |",
        "|---|" + "---:|" * len(summary["strategies"]),
    ]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in _rows(summary)]
    lines += ["", "![eval value loss](loss_curves.png)", "", "![per-field accuracy](field_accuracy.png)", ""]
    return "\n".join(lines)


def plot(summary: dict[str, Any], out: Path) -> list[Path]:
    """``loss_curves.png`` and ``field_accuracy.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for strategy in summary["strategies"]:
        for ax, curves, title in ((axes[0], summary["eval_curves"], "eval value loss"), (axes[1], summary["train_curves"], "training loss (own mask)")):
            first = True
            for _seed, curve in sorted(curves[strategy].items()):
                if curve:
                    xs, ys = zip(*curve)
                    ax.plot(xs, ys, label=strategy if first else None, color=f"C{summary['strategies'].index(strategy)}", alpha=0.8)
                    first = False
            ax.set_title(title)
            ax.set_xlabel("optimizer step")
    axes[0].legend()
    fig.tight_layout()
    paths.append(out / "loss_curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    decoding = summary["decodings"][0] if summary["decodings"] else None
    if decoding:
        fields = sorted({f for s in summary["strategies"] for f in summary["per_field"][s].get(decoding, {})})
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(fields) * len(summary["strategies"])), 4))
        width = 0.8 / max(len(summary["strategies"]), 1)
        for i, strategy in enumerate(summary["strategies"]):
            acc = summary["per_field"][strategy].get(decoding, {})
            ax.bar([j + i * width for j in range(len(fields))], [100 * acc.get(f, 0) for f in fields], width, label=strategy)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(fields))], fields, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(f"accuracy % ({decoding} decoding)")
        ax.legend()
        fig.tight_layout()
        paths.append(out / "field_accuracy.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def write_report(summary: dict[str, Any], out: Path) -> Path:
    """Write ``summary.json``, the plots and ``report.md``; return the report's path."""
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    plot(summary, out)
    path = out / "report.md"
    path.write_text(markdown(summary), encoding="utf-8")
    return path
