"""Batch built examples: pad, drop what has nothing to train, merge image tensors.

Padding is marked by the attention mask and by position, never by token id: SmolLM2's
pad token *is* its end-of-turn token, and masking by id would stop the model from ever
learning to stop.

``StructuredOutputDataCollator`` takes examples already built by ``build_example`` (or
raw chats, which it builds). ``SelectiveLossVisionDataCollator`` is the notes' name for
the vision case; where ``unsloth`` is importable (a CUDA machine) it builds on
``UnslothVisionDataCollator`` and masks the labels that collator produced.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from model_garden.masking import MaskConfig, build_example, text_tokenizer
from model_garden.masking.batch import pad_batch
from model_garden.masking.strategies import selective_strategy
from model_garden.training.label_masker import LabelMasker

log = logging.getLogger(__name__)

@dataclass
class StructuredOutputDataCollator:
    """Pad examples into a right-padded batch.

    Attributes:
        processing: Tokenizer or processor; needed only to build raw chats and to find
            the pad id.
        mask_config: Policy for raw chats (features with ``messages``).
        max_length: Truncation for raw chats.
        pad_to_multiple_of: Round the padded length up (helps some kernels).
        dropped: How many examples were dropped because nothing in them is trained.
    """

    processing: Any = None
    mask_config: MaskConfig = field(default_factory=MaskConfig)
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    dropped: int = 0

    def _pad_id(self) -> int:
        tok = text_tokenizer(self.processing) if self.processing is not None else None
        pad = getattr(tok, "pad_token_id", None)
        if pad is None:
            pad = getattr(tok, "eos_token_id", None)
        return 0 if pad is None else int(pad)

    def build(self, feature: dict[str, Any]) -> dict[str, Any]:
        """Build a raw chat (``messages``; optional ``images``, ``processor_kwargs``, and
        ``where`` or ``id`` naming it in errors); pass built examples through."""
        if "input_ids" in feature:
            return feature
        return build_example(
            self.processing,
            feature["messages"],
            self.mask_config,
            images=feature.get("images"),
            max_length=self.max_length,
            example=feature.get("where", feature.get("id", "example")),
            processor_kwargs=feature.get("processor_kwargs"),
        )

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        built = [self.build(f) for f in features]
        kept = [f for f in built if any(label != -100 for label in f["labels"])]
        if len(kept) < len(built):
            self.dropped += len(built) - len(kept)
            log.warning("dropped %d example(s) with no trained token (%d so far)", len(built) - len(kept), self.dropped)
        # A batch with nothing to train still runs, at zero weight, so every rank steps together.
        batch_features = kept or built
        return pad_batch(batch_features, self._pad_id(), side="right", multiple_of=self.pad_to_multiple_of)


def _unsloth_collator() -> type | None:
    try:
        from unsloth.trainer import UnslothVisionDataCollator  # needs a CUDA GPU
    except Exception:  # unsloth raises assorted errors without a GPU
        return None
    return UnslothVisionDataCollator


class SelectiveLossVisionDataCollator(StructuredOutputDataCollator):
    """The notes' vision collator: response-only labels, JSON structure masked.

    Args:
        model: The model (Unsloth's collator wants it; unused otherwise).
        processor: The vision-language processor.
        mask_structural_tokens: False trains the whole reply (response-only).
        conservative_masking: True masks JSON punctuation only; False also masks keys.
        semantic_patterns: If given, train only their capture groups (``custom``).
        structural_weight: Keep masked structural tokens at this weight instead of 0.
        max_length: Truncation.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        mask_structural_tokens: bool = True,
        conservative_masking: bool = True,
        semantic_patterns: tuple[str, ...] | list[str] = (),
        structural_weight: float = 0.0,
        max_length: int | None = None,
    ):
        strategy = selective_strategy(mask_structural_tokens, semantic_patterns, conservative_masking)
        cfg = MaskConfig(strategy=strategy, semantic_patterns=tuple(semantic_patterns), structural_weight=structural_weight)
        super().__init__(processing=processor, mask_config=cfg, max_length=max_length)
        base = _unsloth_collator()
        self._unsloth = base(model, processor) if base is not None else None
        self._masker = LabelMasker(text_tokenizer(processor), cfg) if base is not None else None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self._unsloth is None:
            return super().__call__(features)
        batch = self._unsloth(features)
        batch["labels"], batch["loss_weights"] = self._masker.mask_batch(batch["input_ids"], batch["labels"])
        return batch
