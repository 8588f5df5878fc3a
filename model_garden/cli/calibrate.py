"""``model-garden calibrate``: fit the confidence calibration map of a model on a split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from model_garden.cli.common import console, user_errors


def calibrate(
    predictions: Annotated[Path, typer.Option(help="Predictions JSONL of the calibration split, written with confidence scores")],
    dataset: Annotated[Path, typer.Option(help="The chat JSONL the predictions were made for (gold = last reply)")],
    out: Annotated[Path, typer.Option(help="The map's path, RUN/calibration.json, or the run or export folder to write it in")],
    threshold_level: Annotated[
        float,
        typer.Option(help="Confidence level at which a threshold's precision is certified (its Clopper-Pearson lower bound on the split reaches the target); 0: the split's precision as it is"),
    ] = 0.95,
) -> None:
    """Fit how far to trust each extracted field: score the predictions, pick the
    confidence aggregate (product, min or geomean of the value's token probabilities)
    that best separates right fields from wrong ones (AUROC), fit a monotone map from it
    to accuracy (isotonic regression), and find the confidence thresholds for 95% and
    99% precision, certified at --threshold-level (a small split certifies little: 299
    accepted fields, all right, are needed for 99% at 95%). Save the map beside the
    model, where predict applies it. The figures printed are in-sample: check them on
    another split with evaluate."""
    with user_errors():
        from rich.table import Table

        from model_garden.evaluation.calibration import calibration_outcomes, confidence_report, fit_map
        from model_garden.evaluation.reliability import fields_to_certify
        from model_garden.inference.calibration_map import CALIBRATION_FILE

        if not 0 <= threshold_level < 1:
            raise ValueError(f"--threshold-level must be in [0, 1); got {threshold_level}")
        outcomes = calibration_outcomes(predictions, dataset)
        cmap = fit_map(outcomes, dataset, threshold_level or None)
        raw = outcomes[cmap.aggregate]
        before = confidence_report(raw)
        after = confidence_report([(name, cmap.apply(name, c), right) for name, c, right in raw], cmap.thresholds)
        out = out / CALIBRATION_FILE if out.is_dir() else out
        cmap.save(out)

        table = Table("", "value", title=f"calibration · {predictions.name} (in-sample)")
        table.add_row("fields scored", f"{before['n']} (accuracy {100 * before['accuracy']:.1f}%)")
        for aggregate, value in cmap.candidates.items():
            mark = " (chosen)" if aggregate == cmap.aggregate else ""
            table.add_row(f"AUROC of {aggregate}", ("–" if value is None else f"{value:.3f}") + mark)
        table.add_row("per-field maps", ", ".join(cmap.per_field) or "none: every field uses the pooled map")
        table.add_row("ECE before / after", f"{100 * before['ece']:.1f}% / {100 * after['ece']:.1f}%")
        certified = f", certified at {100 * threshold_level:g}%" if threshold_level else ""
        for target, at in after["at"].items():
            needs = fields_to_certify(float(target), threshold_level) if threshold_level else None
            short = f" (it takes at least {needs} accepted fields, all right; the split has {before['n']})" if needs and needs > before["n"] else ""
            reached = f"none reaches it{certified}{short}" if at["threshold"] is None else (
                f"confidence >= {at['threshold']:.3f}: coverage {100 * at['coverage']:.1f}%, precision {100 * at['precision']:.1f}%"
            )
            table.add_row(f"{100 * float(target):g}% precision{certified}", reached)
        console.print(table)
        console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)
