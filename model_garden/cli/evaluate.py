"""``model-garden evaluate``: score a predictions file against its dataset."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from model_garden.cli.common import console, err_console, user_errors


def evaluate(
    predictions: Annotated[Path, typer.Option(help="Predictions JSONL written by model-garden predict")],
    dataset: Annotated[Path, typer.Option(help="The chat JSONL the predictions were made for (gold = last reply)")],
    schema: Annotated[
        Optional[Path], typer.Option(help="JSON Schema file; default: schema.json beside the dataset, or each record's")
    ] = None,
    case_insensitive: Annotated[bool, typer.Option("--case-insensitive", help="Case-fold strings for the field metrics")] = False,
    predicted_only: Annotated[
        bool, typer.Option("--predicted-only", help="Score only records with a prediction (after predict --limit)")
    ] = False,
    out: Annotated[
        Optional[Path], typer.Option(help="JSON report path (metrics as fractions); default: PREDICTIONS with .report.json")
    ] = None,
    ignore_dataset_mismatch: Annotated[
        bool, typer.Option("--ignore-dataset-mismatch", help="Score predictions whose .meta.json names other data")
    ] = False,
    calibration: Annotated[
        Optional[Path],
        typer.Option(help="calibration.json fitted on another split (model-garden calibrate): applied to the confidences, its 95%/99% precision thresholds measured here; default: the map predict applied"),
    ] = None,
    plots: Annotated[
        Optional[Path], typer.Option(help="Folder for the reliability diagram and the precision-coverage curve (PNG)")
    ] = None,
) -> None:
    """Print JSON and schema validity, field accuracy (all fields, and those whose gold
    is not null), CER, ANLS, hallucination and omission rates, and Donut's F1 and nTED
    accuracy, overall and per field, in percent; write them as a JSON report (as
    fractions, with every record's outcomes). An output that is not one JSON object
    scores zero on every field. Predictions with confidence also get, overall and per
    field, the AUROC of confidence for right against wrong, the expected calibration
    error (10 equal-width bins), and the share of fields accepted without review at the
    95% and 99% precision thresholds of a calibration map fitted on another split."""
    with user_errors():
        from model_garden.evaluation.calibration import evaluate_confidence
        from model_garden.evaluation.calibration_plots import plot_precision_coverage, plot_reliability
        from model_garden.evaluation.report import confidence_table, errors_table, evaluate_files, report_tables

        report = evaluate_files(
            predictions, dataset, schema=schema, case_insensitive=case_insensitive, predicted_only=predicted_only,
            check_dataset=not ignore_dataset_mismatch,
        )
        report["confidence"] = evaluate_confidence(predictions, report, calibration)
        for table in report_tables(report):
            console.print(table)
        console.print(errors_table(report))
        if report["confidence"] is not None:
            console.print(confidence_table(report["confidence"]))
        check = report["source_check"]
        if check["records"]:
            console.print(f"string values (not an enum's) that are no span of their record's source text: {check['values_outside']} "
                          f"(in {len(check['outside'])} of {check['records']} records)")
        if plots is not None and report["confidence"] is not None:
            plots.mkdir(parents=True, exist_ok=True)
            for path in (plot_reliability({"confidence": report["confidence"]}, plots / "reliability.png"),
                         plot_precision_coverage({"confidence": report["confidence"]}, plots / "precision_coverage.png")):
                console.print(f"wrote {path}")
        for key, what in (("missing_predictions", "no prediction"), ("unparseable", "output not one JSON object")):
            if report[key]:
                lines = ", ".join(map(str, report[key][:20])) + (" ..." if len(report[key]) > 20 else "")
                count = f"{len(report[key])} of {report['metrics']['n']} records"
                err_console.print(f"[yellow]warning:[/] {what} for {count}, scored zero on every field (lines {lines})")
        out = out or predictions.with_suffix(".report.json")
        partial = out.with_name(out.name + ".partial")  # replaced whole or not at all
        partial.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(partial, out)
        console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
