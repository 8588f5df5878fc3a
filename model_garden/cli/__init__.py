"""The ``model-garden`` command line. Each pipeline stage registers its commands from
its own module here; heavy imports (torch, transformers) happen inside the commands so
``model-garden --help`` stays instant.

Run: ``model-garden --help`` (or ``python -m model_garden --help``).
"""

from __future__ import annotations

import os

import typer

from model_garden.cli import calibrate, data, evaluate, experiments, export, masks, predict, review, train, vtg

app = typer.Typer(
    name="model-garden",
    help="Fine-tune language and vision-language models for structured output, with selective loss.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode="markdown",  # reflows docstring paragraphs; [brackets] stay literal
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks instead of one-line errors")) -> None:
    """Fine-tune language and vision-language models for structured output, with selective loss."""
    if debug:
        os.environ["MODEL_GARDEN_DEBUG"] = "1"


for _stage in (masks, data, train, predict, export, evaluate, calibrate, review, experiments, vtg):
    _stage.register(app)


def main() -> None:
    """Entry point of the ``model-garden`` script."""
    app()
