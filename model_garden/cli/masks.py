"""``model-garden inspect-masks``: look at what a strategy trains, token by token."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from model_garden.cli.common import BUNDLED_EXAMPLE, console, err_console, user_errors


def inspect_masks(
    dataset: Annotated[Path, typer.Option(help="OpenAI chat JSONL file; default: a bundled example")] = BUNDLED_EXAMPLE,
    base_model: Annotated[str, typer.Option(help="Alias, .gguf file, HF directory or hub id")] = "smollm2-135m",
    strategy: Annotated[str, typer.Option(help="none | conservative | moderate | aggressive | custom")] = "conservative",
    semantic_patterns: Annotated[Optional[list[str]], typer.Option(help="Regex (repeatable) for --strategy custom")] = None,
    structural_weight: Annotated[float, typer.Option(help="Weight of masked structural tokens (0 = masked)")] = 0.0,
    train_on: Annotated[str, typer.Option(help="all_assistant | last_assistant")] = "all_assistant",
    max_length: Annotated[Optional[int], typer.Option(help="Truncate examples to this many tokens")] = None,
    index: Annotated[int, typer.Option(help="Which example to show (0-based)")] = 0,
    limit: Annotated[Optional[int], typer.Option(help="Summarise only the first N examples")] = None,
    html: Annotated[Optional[Path], typer.Option(help="Also write the example as an HTML page here")] = None,
) -> None:
    """Show one example coloured by trained / weighted / masked tokens, and a summary
    table over the dataset: tokens per class, percent trained, fallbacks, drops."""
    with user_errors():
        from model_garden.data.jsonl import JsonlDataset
        from model_garden.masking import MaskConfig, build_example
        from model_garden.masking.inspect import MaskStats, render_html, render_rich
        from model_garden.models import load_processing

        cfg = MaskConfig(
            strategy=strategy,
            semantic_patterns=tuple(semantic_patterns or ()),
            structural_weight=structural_weight,
            train_on=train_on,
        )
        data = JsonlDataset(dataset)
        if not 0 <= index < len(data):
            raise ValueError(f"--index {index} is out of range: {dataset} has {len(data)} examples")
        processing = load_processing(base_model)
        stats = MaskStats()
        shown = None
        for i in range(min(len(data), limit or len(data))):
            ex = build_example(processing, data[i].messages, cfg, max_length=max_length, example=data.where(i))
            stats.add(ex)
            if i == index:
                shown = ex
        if shown is None:
            shown = build_example(processing, data[index].messages, cfg, max_length=max_length, example=data.where(index))
        console.rule(f"{data.where(index)} · strategy {strategy}")
        console.print(render_rich(processing, shown))
        console.print(stats.table(f"mask statistics · {dataset.name} · {strategy}"))
        for warning in stats.warnings():
            err_console.print(f"[yellow]warning:[/] {warning}")
        if html:
            html.write_text(render_html(processing, shown, f"{data.where(index)} · {strategy}"), encoding="utf-8")
            console.print(f"wrote {html}")


def register(app: typer.Typer) -> None:
    app.command("inspect-masks")(inspect_masks)
