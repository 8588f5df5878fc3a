"""``model-garden compare`` (the A/B of loss strategies) and ``model-garden demo``; their
flags are generated from ``CompareConfig``, ``DemoConfig`` and ``TrainConfig``'s groups."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Any

import typer

from model_garden.cli.common import console, user_errors
from model_garden.cli.train import CONFIG_OPTION, config_options, print_translation
from model_garden.experiments.options import CompareOptions, DemoConfig, LaunchOptions
from model_garden.training.config import TrainConfig, load_config

# Set by compare for each run.
_PER_RUN = {"mask_strategy", "use_selective_loss", "seed", "output", "resume", "vision"}


def _csv_fields(values: dict[str, Any], cls: type) -> dict[str, Any]:
    """CSV flag values of list fields as lists (ints where the field holds ints)."""
    hints = typing.get_type_hints(cls)
    out = dict(values)
    for name, value in values.items():
        if isinstance(value, str) and typing.get_origin(hints[name]) is list:
            item = typing.get_args(hints[name])[0]
            try:
                out[name] = [item(v.strip()) for v in value.split(",") if v.strip()]
            except ValueError:
                raise ValueError(f"--{name.replace('_', '-')} must be comma-separated {item.__name__}s; got {value!r}") from None
    return out


def compare(**kwargs: Any) -> None:
    """Train each strategy from identical weights and data order, per seed; compare value
    loss, decoded extraction quality (constrained and free) with paired intervals."""
    with user_errors():
        # Deferred so that `model-garden --help` does not import torch, transformers and PEFT.
        from model_garden.experiments.compare import CompareConfig
        from model_garden.experiments.compare import compare as run_compare
        from model_garden.experiments.report import rich_table

        config = kwargs.pop("config")
        names = {f.name for f in dataclasses.fields(CompareOptions)}
        launch_names = {f.name for f in dataclasses.fields(LaunchOptions)}
        own = _csv_fields({k: v for k, v in kwargs.items() if k in names and v is not None}, CompareOptions)
        launch = LaunchOptions(**{k: v for k, v in kwargs.items() if k in launch_names and v is not None})
        # Each arm names its strategy; the shared options must not be checked against auto's.
        shared = {k: v for k, v in kwargs.items() if k not in names | launch_names}
        train_cfg = load_config(config, {**shared, "mask_strategy": "none"}, print_translation)
        cfg = CompareConfig(train=train_cfg, launch=launch, **dataclasses.asdict(CompareOptions(**own)))
        summary = run_compare(cfg, console=console)
        console.print(rich_table(summary))
        console.print(f"report: {Path(cfg.out) / 'report.md'}")


compare.__signature__ = inspect.Signature(
    [
        CONFIG_OPTION,
        *config_options({"compare": CompareOptions}, csv=True),
        *config_options({"launcher": LaunchOptions}),
        *config_options(TrainConfig.groups(), _PER_RUN),
    ]
)


def demo(**kwargs: Any) -> None:
    """The whole pipeline offline on CPU: synthetic forms, a short A/B of response-only
    vs a selective strategy with SmolLM2-135M, constrained decoding, the comparison."""
    with user_errors():
        from model_garden.experiments.demo import demo as run_demo
        from model_garden.experiments.report import rich_table

        cfg = DemoConfig(**{k: v for k, v in kwargs.items() if v is not None})
        summary = run_demo(cfg, console=console)
        console.print(rich_table(summary))
        console.print(f"report: {Path(cfg.out) / 'compare' / 'report.md'}")
        console.print(f"review page (open it in a browser; least confident first): {Path(cfg.out) / 'review.html'}")


demo.__signature__ = inspect.Signature(config_options({"demo": DemoConfig}))


def register(app: typer.Typer) -> None:
    """Add ``compare`` and ``demo``."""
    app.command("compare")(compare)
    app.command("demo")(demo)
