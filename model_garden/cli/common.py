"""Shared CLI pieces: the consoles, exit codes, and turning errors into one clear line
instead of a traceback.

Exit codes (docs/reliability.md):

* 0: done.
* 1: a check found problems (``validate-data``), or an internal error (a bug: the
  message says so; ``--debug`` shows the traceback).
* 2: bad input: a flag, a config value, a dataset record, a path, a full disk.
* 130 / 143: interrupted by SIGINT / SIGTERM after a checkpoint was saved (training), or
  stopped by SIGINT elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

BUNDLED_EXAMPLE = Path(__file__).resolve().parent.parent / "assets" / "example.jsonl"
EXIT_PROBLEMS, EXIT_INTERNAL, EXIT_BAD_INPUT = 1, 1, 2


def debugging() -> bool:
    """``--debug`` (or ``MODEL_GARDEN_DEBUG=1``): show tracebacks instead of one line."""
    return os.environ.get("MODEL_GARDEN_DEBUG", "") not in ("", "0")


def _os_message(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return f"{where}no space left on the disk; free some space and run again (a resumable run continues with --resume latest)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}not allowed to write here ({exc.strerror}); choose another output path"
    if exc.errno == errno.ENOTDIR:
        return f"{where}a part of this path is a file, not a folder"
    if exc.errno == errno.EISDIR:
        return f"{where}is a folder; give a file name"
    return f"{where}{exc.strerror or exc}"


def _fail(message: str, code: int) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)  # unwrapped: paths stay whole
    return typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print a failure as one line and exit: 2 for bad input (``ValueError`` and its kin:
    bad data, flags and config values; missing files; OS errors on paths; errors marked
    ``self_explaining``, such as a failed checkpoint save), 1 with a note
    for anything else (a bug). ``--debug`` re-raises instead."""
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        raise _fail("interrupted", 130) from None
    except Exception as exc:
        if debugging():
            raise
        if isinstance(exc, (ValueError, FileNotFoundError)) or getattr(exc, "self_explaining", False):
            raise _fail(str(exc), EXIT_BAD_INPUT) from None
        if isinstance(exc, OSError):
            raise _fail(_os_message(exc), EXIT_BAD_INPUT) from None
        raise _fail(f"internal error ({type(exc).__name__}: {exc}); rerun with --debug for the traceback and please report it", EXIT_INTERNAL) from None


def interrupted_exit(signal_number: int | None) -> typer.Exit:
    """The exit of a run stopped by a signal after saving a checkpoint: 128 + the signal."""
    return typer.Exit(128 + (signal_number or 2))
