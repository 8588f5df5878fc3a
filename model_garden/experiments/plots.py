"""The PNG plots of a comparison report, from ``summary.summarize``'s summary.

* ``loss_curves.png``: eval value loss and training loss against optimizer steps, one
  line per run, coloured by strategy.
* ``field_accuracy.png``: per-field accuracy (mean over seeds) of the first decoding,
  horizontal bars grouped by field; the figure grows with the number of fields and the
  legend sits above the bars, so it stays readable at 4 fields or 60.
* ``decoded_curves.png`` (when the runs logged decoded evaluation): decoded field
  accuracy against steps per strategy, the mean over seeds with its 95% Student-t band.

Try it: ``python -c "import json, pathlib; from model_garden.experiments.plots import plot; print(plot(json.load(open('OUT/summary.json')), pathlib.Path('/tmp')))"``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

from model_garden.experiments.stats import interval  # noqa: E402

DPI = 110


def _save(fig: Any, path: Path) -> Path:
    # bbox_inches="tight" keeps long field names and the outside legend inside the image
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def loss_curves(summary: dict[str, Any], path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, strategy in enumerate(summary["strategies"]):
        panels = ((axes[0], summary["eval_curves"], "eval value loss"), (axes[1], summary["train_curves"], "training loss (own mask)"))
        for ax, curves, title in panels:
            runs = [c for _, c in sorted(curves[strategy].items()) if c]
            for j, curve in enumerate(runs):
                xs, ys = zip(*curve)
                ax.plot(xs, ys, label=strategy if j == 0 else None, color=f"C{i}", alpha=0.8)
            ax.set_title(title)
            ax.set_xlabel("optimizer step")
    axes[0].legend()
    fig.tight_layout()
    return _save(fig, path)


def field_accuracy(summary: dict[str, Any], decoding: str, path: Path) -> Path:
    strategies = summary["strategies"]
    fields = list(dict.fromkeys(f for s in strategies for f in summary["per_field"][s].get(decoding, {})))  # gold order
    bar = 0.8 / len(strategies)
    fig, ax = plt.subplots(figsize=(7, 0.8 + len(fields) * (0.18 * len(strategies) + 0.12)))
    for i, strategy in enumerate(strategies):
        acc = summary["per_field"][strategy].get(decoding, {})
        ys = [j - 0.4 + bar * (i + 0.5) for j in range(len(fields))]
        ax.barh(ys, [100 * acc[f] if f in acc else 0 for f in fields], bar, label=strategy, color=f"C{i}")
    ax.set_yticks(range(len(fields)), fields, fontsize=8)
    ax.set_ylim(len(fields) - 0.5, -0.5)  # first field on top
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"accuracy % ({decoding} decoding, mean over seeds)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=min(len(strategies), 4), frameon=False, fontsize=8)
    return _save(fig, path)


def decoded_curves(summary: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, strategy in enumerate(summary["strategies"]):
        runs = [{int(step): acc for step, acc in c} for c in summary["decoded_curves"][strategy].values() if c]
        if not runs:
            continue
        steps = sorted(set(runs[0]).intersection(*runs[1:]))  # evaluations every seed made
        stats = [interval([r[s] for r in runs]) for s in steps]
        means = [100 * m for m, _ in stats]
        ax.plot(steps, means, color=f"C{i}", label=f"{strategy} ({len(runs)} seed{'s' if len(runs) != 1 else ''})")
        if len(runs) > 1:
            half = [100 * h for _, h in stats]
            ax.fill_between(steps, [m - h for m, h in zip(means, half)], [m + h for m, h in zip(means, half)], color=f"C{i}", alpha=0.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("decoded field accuracy % (band: 95% CI over seeds)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, path)


def plot(summary: dict[str, Any], out: Path) -> list[Path]:
    """Write the plots into ``out``; returns their paths."""
    paths = [loss_curves(summary, out / "loss_curves.png")]
    if summary["decodings"]:
        paths.append(field_accuracy(summary, summary["decodings"][0], out / "field_accuracy.png"))
    if any(c for per_seed in summary.get("decoded_curves", {}).values() for c in per_seed.values()):
        paths.append(decoded_curves(summary, out / "decoded_curves.png"))
    return paths
