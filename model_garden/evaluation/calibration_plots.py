"""The confidence plots ``evaluate --plots`` draws from ``calibration.confidence_report``'s
reports: a reliability diagram and a precision-coverage curve (PNG, matplotlib's Agg).

Try it: ``model-garden evaluate --predictions PREDS.jsonl --dataset DATASET.jsonl --plots OUT/`` (after ``predict``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def plot_reliability(reports: Mapping[str, dict[str, Any]], path: str | Path) -> Path:
    """Reliability diagram: accuracy against mean confidence per bin, one line per
    ``confidence_report`` (e.g. ``{"raw": ..., "calibrated": ...}``), fields per bin below."""
    fig = _figure((5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    top.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfectly calibrated")
    width = 0.8 / (10 * len(reports))
    for i, (label, report) in enumerate(reports.items()):
        filled = [b for b in report["bins"] if b["n"]]
        top.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], marker="o", color=f"C{i}",
                 label=f"{label} (ECE {100 * report['ece']:.1f}%)")
        lefts = [b["low"] + 0.01 + width * (i + 0.5) for b in report["bins"]]  # the series side by side in each bin
        bottom.bar(lefts, [b["n"] for b in report["bins"]], width, color=f"C{i}")
    top.set(ylabel="accuracy", ylim=(0, 1))
    top.grid(alpha=0.3)
    top.legend(loc="upper left", frameon=False, fontsize=8)
    bottom.set(xlim=(0, 1), xlabel="confidence", ylabel="fields")
    return _save(fig, Path(path))


def plot_precision_coverage(reports: Mapping[str, dict[str, Any]], path: str | Path) -> Path:
    """Precision against coverage as the threshold falls, one line per
    ``confidence_report``, with its thresholds (``at``) marked."""
    fig = _figure((6, 4))
    ax = fig.subplots()
    for i, (label, report) in enumerate(reports.items()):
        ax.plot(report["curve"]["coverage"], report["curve"]["precision"], color=f"C{i}", label=label)
        for target, at in report["at"].items():
            if at["precision"] is not None:
                ax.plot(at["coverage"], at["precision"], marker="o", color=f"C{i}")
                label = f"{100 * float(target):g}%: confidence >= {at['threshold']:.3f}"
                ax.annotate(label, (at["coverage"], at["precision"]), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set(xlabel="coverage (fields accepted)", ylabel="precision (right among accepted)", xlim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", frameon=False, fontsize=8)
    return _save(fig, Path(path))


def _figure(size: tuple[float, float]) -> Any:
    # matplotlib only for the plots; the Figure API draws with Agg without touching pyplot's global backend
    from matplotlib.figure import Figure

    return Figure(figsize=size)


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")  # tight: keeps the labels inside the image
    return path
