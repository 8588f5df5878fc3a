"""``model-garden inspect-masks``: look at what a strategy trains, token by token. The
masking and data flags are ``train``'s own (generated from ``MaskOptions`` and
``DataOptions``), so they mean the same thing here."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from model_garden.cli.common import BUNDLED_EXAMPLE, console, err_console, user_errors
from model_garden.cli.train import config_options
from model_garden.options import build
from model_garden.training.config import DataOptions, MaskOptions, ModelOptions

MASK_FLAGS = {"mask_strategy", "semantic_patterns", "structural_weight", "train_on", "schema"}
DATA_FLAGS = {"max_length", "allow_remote_images", "allow_outside_paths", "data_format", "num_proc", "scan_cache"}


@dataclasses.dataclass
class InspectOptions:
    """What to show.

    Attributes:
        dataset: Dataset (JSONL, parquet/arrow/json, save_to_disk folder); default: a bundled example.
        index: Which example to show (0-based).
        limit: Summarise only the first N examples.
        html: Also write the example as an HTML page here.
    """

    dataset: str = str(BUNDLED_EXAMPLE)
    index: int = 0
    limit: int | None = None
    html: str | None = None


def options(kwargs: dict[str, Any]) -> tuple[ModelOptions, DataOptions, MaskOptions]:
    """The model, data and mask groups from a command's flags (None: not given)."""
    given = {k: v for k, v in kwargs.items() if v is not None}
    pick = lambda cls: build(cls, {k: v for k, v in given.items() if k in {f.name for f in dataclasses.fields(cls)}})  # noqa: E731
    return pick(ModelOptions), pick(DataOptions), pick(MaskOptions)


def inspect_masks(**kwargs: Any) -> None:
    """Show one example coloured by trained / weighted / masked tokens (brackets without
    colours), and a summary table over the dataset: tokens per class, percent trained,
    fallbacks, drops."""
    with user_errors():
        # Deferred so that `model-garden --help` does not import the tokenizer stack.
        from model_garden.data.sources import open_source
        from model_garden.masking import ChatCodec
        from model_garden.masking.inspect import render_html, render_rich
        from model_garden.masking.scan import scan_source
        from model_garden.masking.templates import with_chat_template
        from model_garden.models import load_processing

        own = build(InspectOptions, {k: kwargs.pop(k) for k in list(kwargs) if k in {f.name for f in dataclasses.fields(InspectOptions)} and kwargs[k] is not None})
        model, data, mask = options(kwargs)
        cfg = mask.mask_config()
        source = open_source(own.dataset, format=data.data_format)
        if not 0 <= own.index < len(source):
            raise ValueError(f"--index {own.index} is out of range: {own.dataset} has {len(source)} examples")
        codec = ChatCodec.for_data(
            with_chat_template(load_processing(model.base_model), model.chat_template), own.dataset, allow_remote_images=data.allow_remote_images,
            allow_outside_paths=data.allow_outside_paths, schema_file=mask.schema,
        )
        report = scan_source(source, codec, cfg, data.max_length, limit=own.limit, num_proc=data.num_proc, cache=data.scan_cache)
        report.raise_errors("--limit to look at fewer records")
        shown = codec.encode_train(source.sample(own.index), cfg, max_length=data.max_length)
        console.rule(f"{source.where(own.index)} · strategy {mask.describe()}")
        console.print(render_rich(codec.processing, shown, marks=console.color_system is None))
        if report.from_cache:
            console.print(escape(report.from_cache), soft_wrap=True)
        console.print(report.stats.table(f"mask statistics · {Path(own.dataset).name} · {mask.describe()}"))
        for warning in report.stats.warnings():
            err_console.print(f"[yellow]warning:[/] {warning}")
        if own.html:
            Path(own.html).write_text(render_html(codec.processing, shown, f"{source.where(own.index)} · {mask.describe()}"), encoding="utf-8")
            console.print(f"wrote {own.html}")


inspect_masks.__signature__ = inspect.Signature(
    [
        *config_options({"inspect": InspectOptions}),
        *config_options({"model": ModelOptions}, only={"base_model", "chat_template"}),
        *config_options({"mask": MaskOptions}, only=MASK_FLAGS),
        *config_options({"data": DataOptions}, only=DATA_FLAGS),
    ]
)


def register(app: typer.Typer) -> None:
    app.command("inspect-masks")(inspect_masks)
