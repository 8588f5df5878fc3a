"""Selective masks for labels produced elsewhere (another collator, e.g. Unsloth's).

Each run of trained labels (one reply plus its end-of-turn token) is decoded and encoded
again with offsets. Only when the re-encoding gives back exactly the same token ids are
the character classes mapped onto tokens; otherwise the run stays fully trained and is
counted in ``fallbacks``. Nothing is estimated from character ratios or prefix lengths.

Prefer ``build_example`` where you control tokenization: it needs no round trip.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from model_garden.masking import MaskConfig, build_example
from model_garden.masking.tokens import any_char, special_ids, token_spans
from model_garden.masking.strategies import reply_char_masks, selective_strategy


class LabelMasker:
    """Turn response-only labels into selective labels and loss weights.

    Args:
        tokenizer: A fast tokenizer.
        cfg: The masking policy; by default ``conservative`` (or ``moderate`` with
            ``conservative=False``), as in the notes.
        conservative: The notes' switch, used when ``cfg`` is not given.
    """

    def __init__(self, tokenizer: Any, cfg: MaskConfig | None = None, conservative: bool = True):
        self.tokenizer = tokenizer
        self.cfg = cfg or MaskConfig(strategy=selective_strategy(True, (), conservative))
        self.fallbacks = 0
        self._special = special_ids(tokenizer)

    def mask_row(self, ids: list[int], labels: list[int]) -> tuple[list[int], list[float]]:
        """Masked labels and weights for one sequence."""
        labels = list(labels)
        weights = [1.0 if label != -100 else 0.0 for label in labels]
        i = 0
        while i < len(labels):
            if labels[i] == -100:
                i += 1
                continue
            j = i
            while j < len(labels) and labels[j] != -100:
                j += 1
            self._mask_run(ids[i:j], labels, weights, i)
            i = j
        return labels, weights

    def _mask_run(self, run: list[int], labels: list[int], weights: list[float], at: int) -> None:
        text = self.tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        enc = self.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
        if enc.ids != list(run):
            self.fallbacks += 1
            return
        n_eot = 0
        while n_eot < len(run) and run[len(run) - 1 - n_eot] in self._special:
            n_eot += 1
        starts, ends = token_spans(np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2), len(text))
        reply_end = int(starts[len(run) - n_eot]) if n_eot else len(text)
        _, trained_chars, found = reply_char_masks(text[:reply_end], self.cfg)
        if not found and self.cfg.strategy not in ("none", "custom"):
            self.fallbacks += 1
        char_mask = np.zeros(len(text) + 1, dtype=np.uint8)
        char_mask[:reply_end] = trained_chars
        trained = any_char(char_mask, starts, ends)
        trained[len(run) - n_eot :] = True
        w = self.cfg.structural_weight
        for k, keep in enumerate(trained):
            if not keep:
                labels[at + k] = -100 if w == 0 else labels[at + k]
                weights[at + k] = w

    def mask_batch(self, input_ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked ``labels`` and ``loss_weights`` for a batch."""
        out_labels, out_weights = [], []
        for ids, row in zip(input_ids.tolist(), labels.tolist()):
            lab, w = self.mask_row(ids, row)
            out_labels.append(lab)
            out_weights.append(w)
        return torch.tensor(out_labels, dtype=labels.dtype), torch.tensor(out_weights, dtype=torch.float32)

    def mask_structural_tokens(self, example: dict[str, Any]) -> dict[str, Any]:
        """The notes' entry point: a chat (``messages``) is built exactly; an example
        that already has ``input_ids`` and ``labels`` gets selective labels and weights."""
        if "messages" in example and "input_ids" not in example:
            return {**example, **build_example(self.tokenizer, example["messages"], self.cfg)}
        labels, weights = self.mask_row(list(example["input_ids"]), list(example["labels"]))
        return {**example, "labels": labels, "loss_weights": weights}
