"""``python -m model_garden`` runs the CLI (same as the ``model-garden`` command)."""

from model_garden.cli import main

main()
