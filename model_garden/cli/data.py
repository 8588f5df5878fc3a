"""Data commands: ``validate-data`` checks a JSONL file line by line; ``make-data forms``
and ``make-data sroie`` build the data sets."""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from model_garden.cli.common import console, err_console, user_errors
from model_garden.cli.masks import DATA_FLAGS, MASK_FLAGS, options
from model_garden.cli.train import config_options
from model_garden.training.config import DataOptions, MaskOptions, ModelOptions

make_data = typer.Typer(help="Build training data sets: synthetic forms, SROIE receipts.", no_args_is_help=True)


def _histogram(lengths, bins: int = 10, width: int = 40) -> Table:
    import numpy as np

    values = np.asarray(lengths)
    counts, edges = np.histogram(values, bins=min(bins, max(1, len(np.unique(values)))))
    table = Table(title=f"token lengths · min {values.min()} · median {int(np.median(values))} · max {values.max()}")
    table.add_column("tokens", justify="right")
    table.add_column("examples", justify="right")
    table.add_column("")
    for n, lo, hi in zip(counts, edges[:-1], edges[1:]):
        table.add_row(f"{int(lo)}–{int(hi)}", str(n), "█" * round(width * n / max(counts.max(), 1)))
    return table


def validate_data(file: Path, base_model: str | None = None, **kwargs: Any) -> None:
    """Check a dataset: every bad record with its reason, counts, token lengths, image sizes.

    Exits with 1 when a record is bad or the dataset is empty."""
    with user_errors():
        # Deferred so that `model-garden --help` does not import the tokenizer stack.
        from model_garden.data.images import ImagePolicy
        from model_garden.masking.scan import validate_dataset
        from model_garden.masking.templates import with_chat_template
        from model_garden.models import load_processing

        model, data, mask = options(kwargs)
        processing = with_chat_template(load_processing(base_model), model.chat_template) if base_model is not None else None
        policy = ImagePolicy(allow_remote=data.allow_remote_images, allow_outside_paths=data.allow_outside_paths)
        start = time.perf_counter()
        with console.status(f"validating {file}"):
            report = validate_dataset(
                file, processing, mask.mask_config(), data.max_length, policy, num_proc=data.num_proc, cache=data.scan_cache, format=data.data_format
            )
        elapsed = time.perf_counter() - start

    console.rule(f"{file} · strategy {mask.describe()}")
    if report.from_cache:
        console.print(escape(report.from_cache), soft_wrap=True)
    for message in report.messages:
        console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    counts = Table(title=f"checked in {elapsed:.1f} s")
    for name in report.counts:
        counts.add_column(name, justify="right")
    counts.add_row(*(str(v) for v in report.counts.values()))
    console.print(counts)
    if report.lengths:
        console.print(_histogram(report.lengths))
    elif base_model is None:
        console.print("pass --base-model to build every example and see its token length")
    if sizes := report.image_sizes():
        console.print("image sizes: " + " · ".join(f"{name} {w}x{h}" for name, (w, h) in sizes.items()))
    if report.records == 0:
        err_console.print(f"[bold red]{file} holds no record[/]")
        raise typer.Exit(1)
    if not report.ok:
        err_console.print(f"[bold red]{len(report.errors)} bad record(s)[/] in {file}")
        raise typer.Exit(1)
    console.print(f"[green]{file}: no problem found in {report.records} records[/]")


validate_data.__signature__ = inspect.Signature(
    [
        inspect.Parameter("file", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[Path, typer.Argument(help="Dataset: JSONL, parquet/arrow/json file or folder, save_to_disk folder")]),
        inspect.Parameter(
            "base_model", inspect.Parameter.KEYWORD_ONLY, default=None,
            annotation=Annotated[Optional[str], typer.Option(help="Also build every example with this model's tokenizer or processor (token lengths)")],
        ),
        *config_options({"model": ModelOptions}, only={"chat_template"}),
        *config_options({"mask": MaskOptions}, only=MASK_FLAGS),
        *config_options({"data": DataOptions}, only=DATA_FLAGS),
    ]
)


def _written(files: dict[Path, int], unit: str) -> Table:
    table = Table(title="written")
    table.add_column("file")
    table.add_column(unit, justify="right")
    table.add_column("size", justify="right")
    for path, n in files.items():
        table.add_row(str(path), str(n), f"{path.stat().st_size / 1e6:.2f} MB")
    return table


@make_data.command("forms")
def make_forms(
    out: Annotated[Path, typer.Option(help="Output folder")],
    n: Annotated[int, typer.Option(help="Number of forms")] = 204,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives identical files")] = 0,
    val_fraction: Annotated[float, typer.Option(help="Share of forms in val.jsonl")] = 0.1,
    test_fraction: Annotated[float, typer.Option(help="Share of forms in test.jsonl")] = 0.1,
) -> None:
    """Synthetic French vehicle-registration forms: PNGs, text and vision JSONL, schema."""
    with user_errors():
        from model_garden.data.forms import SPLITS
        from model_garden.data.forms import make_forms as build

        start = time.perf_counter()
        sizes = build(out, n=n, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
        elapsed = time.perf_counter() - start
    files = {out / kind / f"{split}.jsonl": sizes[split] for kind in ("text", "vision") for split in SPLITS}
    files[out / "schema.json"] = 1
    console.print(_written(files, "forms"))
    console.print(f"{n} forms (images in {out / 'images'}) in {elapsed:.1f} s")


@make_data.command("sroie")
def make_sroie(
    src: Annotated[Path, typer.Option(help="SROIE folder with box/, key/ and optionally img/")],
    out: Annotated[Path, typer.Option(help="Output folder")],
    n_train: Annotated[int, typer.Option(help="The first N receipts go to train.jsonl, the rest to test.jsonl")] = 400,
    n_calib: Annotated[int, typer.Option(help="Of those, the last N go to calib.jsonl instead: held out to fit the confidence calibration map on")] = 0,
) -> None:
    """Convert SROIE receipts to chat JSONL and a schema; irregular source lines are listed."""
    with user_errors():
        from model_garden.data.sroie import convert_sroie

        start = time.perf_counter()
        result = convert_sroie(src, out, n_train=n_train, n_calib=n_calib)
        elapsed = time.perf_counter() - start
    console.print(_written(result.files, "receipts"))
    console.print(f"converted in {elapsed:.1f} s; {len(result.skipped)} receipt(s) skipped")
    if result.problems:
        console.print(f"[yellow]{len(result.problems)} problem(s) in the source:[/]")
        for problem in result.problems:
            console.print(f"  {problem}")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("validate-data")(validate_data)
    app.add_typer(make_data, name="make-data")
