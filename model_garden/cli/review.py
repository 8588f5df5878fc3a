"""``model-garden review``: a self-contained HTML page for checking predictions field by field."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from model_garden.cli.common import console, user_errors


def review(
    predictions: Annotated[Path, typer.Option(help="Predictions JSONL written by model-garden predict")],
    dataset: Annotated[Path, typer.Option(help="The dataset the predictions were made for (gold = last reply)")],
    out: Annotated[Optional[Path], typer.Option(help="HTML page to write; default: PREDICTIONS with .review.html")] = None,
    data_format: Annotated[str, typer.Option(help="auto | jsonl | parquet | arrow | json | disk | hub (auto: from the path)")] = "auto",
    allow_outside_paths: Annotated[
        bool, typer.Option("--allow-outside-paths", help="Allow image paths outside the dataset folder")
    ] = False,
) -> None:
    """Write one HTML page (no network needed to open it, images embedded) with every
    predicted record, least confident first: gold and predicted values with their
    differences marked, confidences, the source spans grounded values were copied from,
    and filters for wrong fields, low confidence and one field."""
    with user_errors():
        # Deferred so that `model-garden --help` does not import the data and masking stack.
        from model_garden.evaluation.review import write_review

        out = out or predictions.with_suffix(".review.html")
        summary = write_review(predictions, dataset, out, data_format=data_format, allow_outside_paths=allow_outside_paths)
        console.print(
            f"wrote {out}: {summary['records']} records, {summary['fields']} fields ({summary['wrong']} wrong), "
            f"{summary['images']} images embedded" + (f", {summary['to_review']} to review" if "to_review" in summary else "")
        )


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("review")(review)
