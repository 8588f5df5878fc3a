"""``model-garden inspect-masks``: look at what a strategy trains, token by token."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from model_garden.cli.common import BUNDLED_EXAMPLE, console, err_console, user_errors


def inspect_masks(
    dataset: Annotated[Path, typer.Option(help="Dataset (JSONL, parquet/arrow/json, save_to_disk folder); default: a bundled example")] = BUNDLED_EXAMPLE,
    base_model: Annotated[str, typer.Option(help="Alias, .gguf file, HF directory or hub id")] = "smollm2-135m",
    mask_strategy: Annotated[str, typer.Option("--mask-strategy", "--strategy", help="none | conservative | moderate | aggressive | custom | schema-forced")] = "conservative",
    semantic_patterns: Annotated[Optional[list[str]], typer.Option(help="Regex (repeatable) for --mask-strategy custom")] = None,
    structural_weight: Annotated[float, typer.Option(help="Weight of masked structural tokens (0 = masked)")] = 0.0,
    train_on: Annotated[str, typer.Option(help="all_assistant | last_assistant")] = "all_assistant",
    max_length: Annotated[Optional[int], typer.Option(help="Truncate examples to this many tokens")] = None,
    index: Annotated[int, typer.Option(help="Which example to show (0-based)")] = 0,
    limit: Annotated[Optional[int], typer.Option(help="Summarise only the first N examples")] = None,
    html: Annotated[Optional[Path], typer.Option(help="Also write the example as an HTML page here")] = None,
    allow_remote_images: Annotated[bool, typer.Option(help="Fetch http(s) images")] = False,
    allow_outside_paths: Annotated[bool, typer.Option(help="Allow image paths outside the dataset folder")] = False,
    data_format: Annotated[str, typer.Option(help="auto | jsonl | parquet | arrow | json | disk")] = "auto",
) -> None:
    """Show one example coloured by trained / weighted / masked tokens, and a summary
    table over the dataset: tokens per class, percent trained, fallbacks, drops."""
    with user_errors():
        # Deferred so that `model-garden --help` does not import the tokenizer stack.
        from model_garden.data.sources import SampleView, open_source
        from model_garden.masking import ChatCodec, MaskConfig
        from model_garden.masking.inspect import render_html, render_rich
        from model_garden.masking.scan import scan
        from model_garden.models import load_processing

        cfg = MaskConfig(
            strategy=mask_strategy, semantic_patterns=tuple(semantic_patterns or ()), structural_weight=structural_weight, train_on=train_on
        )
        source = open_source(dataset, format=data_format)
        if not 0 <= index < len(source):
            raise ValueError(f"--index {index} is out of range: {dataset} has {len(source)} examples")
        codec = ChatCodec.for_data(
            load_processing(base_model), dataset, allow_remote_images=allow_remote_images, allow_outside_paths=allow_outside_paths
        )
        report = scan(SampleView(source, limit), codec, cfg, max_length, name=str(dataset))
        report.raise_errors("--limit to look at fewer records")
        shown = codec.encode_train(source.sample(index), cfg, max_length=max_length)
        console.rule(f"{source.where(index)} · strategy {mask_strategy}")
        console.print(render_rich(codec.processing, shown, marks=console.color_system is None))
        console.print(report.stats.table(f"mask statistics · {dataset.name} · {mask_strategy}"))
        for warning in report.stats.warnings():
            err_console.print(f"[yellow]warning:[/] {warning}")
        if html:
            html.write_text(render_html(codec.processing, shown, f"{source.where(index)} · {mask_strategy}"), encoding="utf-8")
            console.print(f"wrote {html}")


def register(app: typer.Typer) -> None:
    app.command("inspect-masks")(inspect_masks)
