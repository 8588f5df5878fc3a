"""``model-garden train`` and ``train-vision``: flags generated from ``TrainConfig``'s
option groups, so every option exists once, with one help text (the field's doc), in the
YAML file and on the command line; ``--help`` shows them by group."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from model_garden.cli.common import console, interrupted_exit, user_errors
from model_garden.options import field_docs
from model_garden.training.config import TrainConfig, load_config
from model_garden.training.foreign import Translation

_HIDDEN = {"vision"}  # set by the command itself


def _option_type(tp: Any, csv: bool = False) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is list:
        return Optional[str] if csv else Optional[list[str]]
    if args:
        return Optional[args[0]]
    return Optional[tp]


CONFIG_OPTION = inspect.Parameter(
    "config",
    inspect.Parameter.KEYWORD_ONLY,
    default=None,
    annotation=Annotated[Optional[Path], typer.Option(help="YAML file of these options (flat or by group); flags override it")],
)


def print_translation(found: Translation) -> None:
    """How a TRL or Axolotl ``--config`` file was read: one line per key."""
    console.print(f"--config {escape(found.path)}: {found.dialect} keys, read as", soft_wrap=True)
    for line in found.lines:
        console.print("  " + escape(line), soft_wrap=True)


def config_options(
    groups: dict[str, type], skip: set[str] | frozenset[str] = frozenset(), *, csv: bool = False, only: set[str] | None = None
) -> list[inspect.Parameter]:
    """One option per field of each option group (or only the fields named in ``only``),
    help from the field's doc, shown in a panel per group. Each defaults to None (not
    given), so the YAML file and the defaults apply. With ``csv``, list fields take one
    comma-separated value (``--seeds 0,1``)."""
    params = []
    for group, cls in groups.items():
        hints, docs = typing.get_type_hints(cls), field_docs(cls)
        for f in dataclasses.fields(cls):
            if f.name in skip or (only is not None and f.name not in only):
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            if csv and isinstance(default, list):
                default = ",".join(map(str, default))
            # Escaped: typer renders help as rich markup, which would swallow "[default: 4]" and "[start, end]".
            option = typer.Option(help=escape(f"{docs.get(f.name, '')} [default: {default}]"), show_default=False, rich_help_panel=f"{group} options")
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[_option_type(hints[f.name], csv), option]))
    return params


def _make(vision: bool):
    def command(**kwargs: Any) -> None:
        with user_errors():
            # Deferred so that `model-garden --help` does not import torch, transformers and PEFT.
            from model_garden.evaluation.decoded import decoded_eval_factory
            from model_garden.training.run import train

            config = kwargs.pop("config")
            cfg = load_config(config, {**kwargs, "vision": vision}, print_translation)
            result = train(cfg, console=console, decoded_eval_factory=decoded_eval_factory)
        if result.interrupted:
            raise interrupted_exit(result.metrics.get("signal"))

    command.__signature__ = inspect.Signature([CONFIG_OPTION, *config_options(TrainConfig.groups(), _HIDDEN)])
    command.__doc__ = (
        ("Fine-tune a vision-language model (Qwen2-VL, Qwen2.5-VL, Idefics3/SmolVLM) " if vision else "Fine-tune a language model ")
        + "with response-only or selective loss, on JSONL, parquet/arrow/json files or folders, a save_to_disk "
        "folder or a hub dataset (OpenAI messages, TRL prompt/completion or ShareGPT records)."
    )
    return command


train_text = _make(False)
train_vision = _make(True)


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``train-vision``."""
    app.command("train")(train_text)
    app.command("train-vision")(train_vision)
