"""``model-garden predict``: generate a reply for every record of a dataset, constrained to
its JSON schema by default; flags generated from ``PredictOptions``."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import typer

from model_garden.cli.common import console, err_console, user_errors
from model_garden.cli.train import config_options
from model_garden.inference.options import PredictOptions
from model_garden.options import build


def predict(**kwargs: Any) -> None:
    """Greedy predictions, one JSON line per record: line, output, constrained, new_tokens."""
    with user_errors():
        # Deferred so that `model-garden --help` does not import torch, transformers and PEFT.
        from model_garden.inference.predict import predict as run

        opts = build(PredictOptions, {k: v for k, v in kwargs.items() if v is not None})
        stats = run(**dataclasses.asdict(opts))
        console.print(
            f"wrote {opts.out}: {stats['examples']} predictions, {stats['new_tokens']} tokens in {stats['seconds']:.1f} s "
            f"({stats['new_tokens'] / max(stats['seconds'], 1e-9):.1f} tokens/s, {stats['threads']} threads, engine {opts.engine})"
        )
        if stats["cut"]:
            shown = ", ".join(stats["cut"][:10]) + (" ..." if len(stats["cut"]) > 10 else "")
            err_console.print(
                f"[yellow]warning:[/] {len(stats['cut'])} replies hit the budget of {stats['max_new_tokens']} new tokens and are cut "
                f"(raise --max-new-tokens): {shown}"
            )


predict.__signature__ = inspect.Signature(config_options({"predict": PredictOptions}))


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("predict")(predict)
