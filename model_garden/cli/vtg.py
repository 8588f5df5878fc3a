"""``model-garden evaluate-vtg``: score temporal grounding answers (R1@0.3/0.5/0.7, mIoU)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from model_garden.cli.common import console, err_console, user_errors


def evaluate_vtg(
    predictions: Annotated[Path, typer.Option(help='JSONL, one {"index": i, "output": "<answer>"} per annotation row')],
    annotations: Annotated[Path, typer.Option(help="Charades-STA .txt or ActivityNet Captions .json the predictions answer")],
    durations: Annotated[Optional[Path], typer.Option(help="Charades-STA durations CSV (id,length); clips spans, needed for temporal tokens")] = None,
    num_bins: Annotated[int, typer.Option(help="Temporal bins of <k> token answers (as trained)", min=1)] = 100,
    out: Annotated[Optional[Path], typer.Option(help="JSON report path; default: PREDICTIONS with .report.json")] = None,
) -> None:
    """Parse each answer into a span in seconds ([12.3, 20.0], 12.3 - 20.0 seconds,
    00:12 - 00:20, temporal tokens ...), print R1@0.3/0.5/0.7 and mIoU (percent; an
    unparsed or missing answer scores IoU 0), and write them with per-row IoUs as JSON."""
    with user_errors():
        from model_garden.vtg.report import evaluate_files, report_table

        report = evaluate_files(predictions, annotations, durations, num_bins)
        console.print(report_table(report))
        for key, what in (("missing_predictions", "no prediction"), ("unparsed", "no span found in the answer")):
            if report[key]:
                shown = ", ".join(map(str, report[key][:20])) + (" ..." if len(report[key]) > 20 else "")
                err_console.print(f"[yellow]warning:[/] {what}, scored IoU 0: {len(report[key])} rows (indices {shown})")
        dropped = report["annotation_report"]["dropped"]
        if dropped:
            err_console.print(f"[yellow]warning:[/] {len(dropped)} annotation rows with start >= end were left out, e.g. {dropped[0]}")
        out = out or predictions.with_suffix(".report.json")
        out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("evaluate-vtg")(evaluate_vtg)
