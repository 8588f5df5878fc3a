"""``model-garden export``: a training run as a merged, ONNX or GGUF model, with the reply
schema (and its decoding layout) beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from model_garden.cli.common import console, err_console, user_errors


def export(
    run: Annotated[str, typer.Argument(help="Training output folder, HF model folder, or a --base-model value")],
    out: Annotated[Path, typer.Option(help="Folder to write (must not exist or be empty)")],
    format: Annotated[str, typer.Option(help="merged (safetensors), onnx (ONNX Runtime GenAI) or gguf (llama.cpp)")] = "merged",
    dtype: Annotated[Optional[str], typer.Option(help="merged and gguf: bfloat16 (merged default), float16, float32")] = None,
    quantize: Annotated[Optional[str], typer.Option(help="onnx: int8 (default), int4 or fp32; gguf: q8_0 (default)")] = None,
    schema: Annotated[Optional[Path], typer.Option(help="Reply JSON schema file; default: the run's own (its dataset's)")] = None,
    llama_cpp: Annotated[Optional[Path], typer.Option(help="gguf: a llama.cpp checkout whose convert_hf_to_gguf.py to use")] = None,
) -> None:
    """Merge the adapter into its base and write a model that loads without model-garden,
    with schema.json beside it. Serve it with that schema: ONNX Runtime GenAI, vLLM's
    guidance backend and llama.cpp built with llguidance read its x-guidance layout."""
    with user_errors():
        from model_garden.export import SCHEMA_FILE
        from model_garden.export import export as run_export

        folder = run_export(run, out, format, dtype=dtype, quantize=quantize, schema=schema, llama_cpp=llama_cpp)
        files = sorted(p for p in folder.iterdir() if p.is_file())
        size = sum(p.stat().st_size for p in files) / 1e6
        console.print(f"wrote {folder}: {format}, {len(files)} files, {size:.0f} MB")
        if not (folder / SCHEMA_FILE).is_file():
            err_console.print(
                f"[yellow]warning:[/] no reply schema found (the run names no dataset); pass --schema FILE so "
                f"{SCHEMA_FILE} ships with the model: a selective-loss model must be decoded with it"
            )


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("export")(export)
