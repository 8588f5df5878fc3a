"""``model-garden predict``: generate a reply for every record of a dataset, constrained to
its JSON schema by default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from model_garden.cli.common import console, err_console, user_errors


def predict(
    model: Annotated[str, typer.Option(help="Training output folder, HF model folder, or a --base-model value")],
    dataset: Annotated[Path, typer.Option(help="Dataset (JSONL, parquet/arrow/json, save_to_disk folder); a final assistant reply is ignored")],
    out: Annotated[Path, typer.Option(help="Predictions JSONL to write (replaced only when complete; OUT.meta.json beside it)")] = Path("preds.jsonl"),
    schema: Annotated[Optional[Path], typer.Option(help="JSON Schema file; default: the dataset's schema.json, or the schema each record carries")] = None,
    constrained: Annotated[bool, typer.Option(help="Constrain replies to the schema (--no-constrained: decode freely)")] = True,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together")] = 8,
    max_new_tokens: Annotated[Optional[int], typer.Option(help="Generation budget per reply [default: the run's longest training reply + 25% + 16, else 256]")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N records")] = None,
    threads: Annotated[Optional[int], typer.Option(help="torch threads [default: the cores the load average leaves free]")] = None,
    resume: Annotated[bool, typer.Option(help="Continue OUT.partial, left by an interrupted run, from its last complete line")] = False,
    data_format: Annotated[str, typer.Option(help="auto | jsonl | parquet | arrow | json | disk")] = "auto",
    allow_remote_images: Annotated[bool, typer.Option(help="Fetch http(s) images")] = False,
    allow_outside_paths: Annotated[bool, typer.Option(help="Allow image paths outside the dataset folder")] = False,
    engine: Annotated[str, typer.Option(help="hf (transformers, any model) | onnxruntime-genai (an --format onnx export) | vllm (an --format merged export, GPU)")] = "hf",
) -> None:
    """Greedy predictions, one JSON line per record: line, output, constrained, new_tokens."""
    with user_errors():
        # Deferred so that `model-garden --help` does not import torch, transformers and PEFT.
        from model_garden.inference.predict import predict as run

        stats = run(
            model, dataset, out, schema=schema, constrained=constrained, batch_size=batch_size,
            max_new_tokens=max_new_tokens, limit=limit, threads=threads, resume=resume, data_format=data_format,
            allow_remote_images=allow_remote_images, allow_outside_paths=allow_outside_paths, engine=engine,
        )
        console.print(
            f"wrote {out}: {stats['examples']} predictions, {stats['new_tokens']} tokens in {stats['seconds']:.1f} s "
            f"({stats['new_tokens'] / max(stats['seconds'], 1e-9):.1f} tokens/s, {stats['threads']} threads)"
        )
        if stats["cut"]:
            shown = ", ".join(stats["cut"][:10]) + (" ..." if len(stats["cut"]) > 10 else "")
            err_console.print(
                f"[yellow]warning:[/] {len(stats['cut'])} replies hit the budget of {stats['max_new_tokens']} new tokens and are cut "
                f"(raise --max-new-tokens): {shown}"
            )


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("predict")(predict)
