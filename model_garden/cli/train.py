"""``model-garden train`` and ``train-vision``: flags generated from ``TrainConfig``, so
every option exists once, with one help text, in the YAML file and on the command line."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from model_garden.cli.common import console, user_errors
from model_garden.training.config import TrainConfig

_HIDDEN = {"vision"}  # set by the command itself


def _option_type(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is list or tp == list[str]:
        return Optional[list[str]]
    if args:
        return Optional[args[0]]
    return Optional[tp]


CONFIG_OPTION = inspect.Parameter(
    "config",
    inspect.Parameter.KEYWORD_ONLY,
    default=None,
    annotation=Annotated[Optional[Path], typer.Option(help="YAML file of these options; flags override it")],
)


def config_options(config_cls: type, skip: set[str] | frozenset[str] = frozenset()) -> list[inspect.Parameter]:
    """One option per field of a config dataclass, help from the field's metadata. Each
    defaults to None (not given), so the YAML file and the dataclass defaults apply."""
    hints = typing.get_type_hints(config_cls)
    params = []
    for f in dataclasses.fields(config_cls):
        if f.name in skip:
            continue
        tp = _option_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else "[]"
        # Escaped: typer renders help as rich markup, which would swallow "[default: 4]" and "[start, end]".
        option = typer.Option(help=escape(f"{f.metadata.get('help', '')} [default: {default}]"), show_default=False)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[tp, option]))
    return params


def _signature() -> inspect.Signature:
    return inspect.Signature([CONFIG_OPTION, *config_options(TrainConfig, _HIDDEN)])


def _make(vision: bool):
    def command(**kwargs: Any) -> None:
        with user_errors():
            from model_garden.training.config import load_config
            from model_garden.training.run import train

            config = kwargs.pop("config")
            cfg = load_config(config, {**kwargs, "vision": vision})
            result = train(cfg, console=console)
        if result.interrupted:
            raise typer.Exit(130)

    command.__signature__ = _signature()
    command.__doc__ = (
        ("Fine-tune a vision-language model (Qwen2-VL, Qwen2.5-VL, Idefics3/SmolVLM) " if vision else "Fine-tune a language model ")
        + "on an OpenAI chat JSONL file with response-only or selective loss."
    )
    return command


train_text = _make(False)
train_vision = _make(True)


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``train-vision``."""
    app.command("train")(train_text)
    app.command("train-vision")(train_vision)
