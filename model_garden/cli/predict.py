"""``model-garden predict``: generate a reply for every record of a dataset, constrained to
its JSON schema by default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from model_garden.cli.common import console, user_errors


def predict(
    model: Annotated[str, typer.Option(help="Training output folder, HF model folder, or a --base-model value")],
    dataset: Annotated[Path, typer.Option(help="OpenAI chat JSONL; a final assistant reply is ignored")],
    out: Annotated[Path, typer.Option(help="Predictions JSONL to write")] = Path("preds.jsonl"),
    schema: Annotated[Optional[Path], typer.Option(help="JSON Schema file; default: the schema each record carries")] = None,
    constrained: Annotated[bool, typer.Option(help="Constrain replies to the schema (--no-constrained: decode freely)")] = True,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Generation budget per reply")] = 256,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N records")] = None,
) -> None:
    """Greedy predictions, one JSON line per record: line, output, constrained, new_tokens."""
    with user_errors():
        from model_garden.inference.predict import predict as run

        stats = run(
            model,
            dataset,
            out,
            schema=schema,
            constrained=constrained,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            limit=limit,
        )
        console.print(
            f"wrote {out}: {stats['examples']} predictions, {stats['new_tokens']} tokens "
            f"in {stats['seconds']:.1f} s ({stats['new_tokens'] / max(stats['seconds'], 1e-9):.1f} tokens/s)"
        )


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("predict")(predict)
