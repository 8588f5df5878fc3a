"""Evaluate a temporal grounding predictions file: the engine of ``model-garden evaluate-vtg``.

Predictions are JSONL, one object per annotation row: ``{"index": i, "output": "<answer
text>"}``, where ``i`` is the row's 0-based position among the rows the reader keeps
(``model_garden.vtg.data``; the order of ``VideoTemporalSFTDataset``). Without
``"index"`` a line's position among the file's non-blank lines is used. Each output is
read with ``parse_span``; one that does not parse, and a row with no prediction at all,
score IoU 0 and are listed in the report.

Try it: ``python -m model_garden.vtg.report PREDS.jsonl ANNOTATIONS [DURATIONS.csv]``
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.table import Table

from model_garden.data.jsonl import DataError
from model_garden.evaluation.report import read_predictions as read_jsonl_predictions
from model_garden.vtg.data import read_annotations
from model_garden.vtg.metrics import THRESHOLDS, Span, grounding_metrics, parse_span, span_ious


def read_predictions(path: str | Path) -> dict[int, tuple[str, str]]:
    """``{annotation index: (output, "file:line")}``; a line without ``index`` is the
    annotation at its position."""
    return read_jsonl_predictions(path, "index", positional=True)


def evaluate_files(
    predictions: str | Path,
    annotations: str | Path,
    durations: str | Path | None = None,
    num_bins: int = 100,
) -> dict[str, Any]:
    """Score a predictions file against an annotation file.

    Args:
        predictions: The predictions JSONL.
        annotations: Charades-STA text or ActivityNet Captions JSON.
        durations: Charades-STA durations CSV (clips answers; needed for temporal tokens).
        num_bins: Temporal bins the model answers with (as it was trained).

    Returns:
        ``metrics`` (see ``grounding_metrics``), ``missing_predictions`` and ``unparsed``
        (annotation indices), ``annotation_report`` and per-row ``examples``.
    """
    moments, read_report = read_annotations(annotations, durations)
    outputs = read_predictions(predictions)
    extra = sorted(i for i in outputs if i >= len(moments))
    if extra:
        raise DataError(f"{outputs[extra[0]][1]}: index {extra[0]} is past the {len(moments)} annotation rows of {annotations}")
    spans: list[Span | None] = []
    for i, m in enumerate(moments):
        output, where = outputs.get(i, (None, ""))
        try:
            spans.append(None if output is None else parse_span(output, m.duration, num_bins))
        except ValueError as exc:
            raise DataError(f"{where}: {exc} (give the durations file, --durations)") from None
    gold = [(m.start, m.end) for m in moments]
    ious = span_ious(spans, gold)
    return {
        "predictions": str(predictions),
        "annotations": str(annotations),
        "num_bins": num_bins,
        "metrics": grounding_metrics(spans, gold),
        "missing_predictions": [i for i in range(len(moments)) if i not in outputs],
        "unparsed": [i for i in range(len(moments)) if i in outputs and spans[i] is None],
        "annotation_report": asdict(read_report),
        "examples": [
            {
                "index": i,
                "video_id": m.video_id,
                "query": m.query,
                "gold": [m.start, m.end],
                "prediction": None if span is None else list(span),
                "iou": iou,
                "output": outputs.get(i, (None, ""))[0],
            }
            for i, (m, span, iou) in enumerate(zip(moments, spans, ious))
        ],
    }


def report_table(report: dict[str, Any]) -> Table:
    """The metrics as a rich table, in the column order papers use."""
    metrics = report["metrics"]
    table = Table(title=f"temporal grounding · {Path(report['annotations']).name}")
    keys = [f"r1@{t:g}" for t in THRESHOLDS] + ["miou"]
    for key in keys:
        table.add_column(key.replace("r1", "R1").replace("miou", "mIoU"), justify="right")
    table.add_column("queries", justify="right")
    table.add_column("unparsed", justify="right")
    table.add_row(*(f"{metrics[k]:.2f}" for k in keys), str(metrics["n"]), str(metrics["n_unparsed"]))
    table.caption = f"percent · unparsed (IoU 0) includes {len(report['missing_predictions'])} missing"
    return table


if __name__ == "__main__":
    from rich.console import Console

    Console().print(report_table(evaluate_files(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)))
