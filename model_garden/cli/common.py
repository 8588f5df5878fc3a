"""Shared CLI pieces: the console, option types, and turning expected errors into one
clear red line instead of a traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

BUNDLED_EXAMPLE = Path(__file__).resolve().parent.parent / "assets" / "example.jsonl"


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print expected failures (bad data, bad flags, missing files) as one line and exit 2."""
    from model_garden.data.images import ImageError
    from model_garden.data.jsonl import DataError
    from model_garden.masking.strategies import MaskingError

    try:
        yield
    except (DataError, MaskingError, ImageError, FileNotFoundError, ValueError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
