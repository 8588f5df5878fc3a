"""Batch encoded examples: pad token sequences and merge a processor's media tensors.

Training pads on the right, generation on the left; both go through ``pad_batch`` so a
prompt batch and a training batch are built the same way. Padding is marked by the
attention mask and by position, never by token id: SmolLM2's pad token *is* its
end-of-turn token, and masking by id would stop the model from ever learning to stop.

Try it: ``python -m model_garden.masking.batch`` pads two encoded prompts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

SEQUENCE_KEYS = ("input_ids", "attention_mask", "labels", "loss_weights", "token_classes", "mm_token_type_ids")
_PAD = {"input_ids": None, "attention_mask": 0, "labels": -100, "loss_weights": 0.0, "token_classes": 0, "mm_token_type_ids": 0}
_DTYPES = {"loss_weights": torch.float32, "token_classes": torch.uint8}


def merge_media(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Merge a processor's per-example tensors into batch tensors.

    Tensors that carry a batch dimension of 1 and several dimensions (Idefics3's
    ``pixel_values [1, images, 3, H, W]``) are padded along the image axis with zeros (the
    model skips all-zero images) and stacked; flat ones (Qwen2-VL's patches and grids)
    are concatenated, as the model expects.
    """
    keys = sorted({k for f in features for k in f if k not in SEQUENCE_KEYS and isinstance(f[k], torch.Tensor)})
    out = {}
    for key in keys:
        present = [f[key] for f in features if key in f]
        sample = present[0]
        if sample.dim() >= 4 and sample.shape[0] == 1:
            most = max(t.shape[1] for t in present)
            padded = []
            for f in features:
                t = f.get(key)
                if t is None:
                    t = sample.new_zeros((1, 0, *sample.shape[2:]))
                if t.shape[1] < most:
                    t = torch.cat([t, t.new_zeros((1, most - t.shape[1], *t.shape[2:]))], dim=1)
                padded.append(t)
            out[key] = torch.cat(padded)
        else:
            out[key] = torch.cat(present)
    return out


def pad_batch(features: list[dict[str, Any]], pad_id: int, *, side: str = "right", multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """Pad the per-token lists of encoded examples into tensors and merge their media.

    Args:
        features: Encoded examples (``input_ids`` and any of ``SEQUENCE_KEYS``, plus a
            processor's tensors).
        pad_id: The id written into padded positions (never used to find them).
        side: ``right`` for training, ``left`` for generation (prompts end together).
        multiple_of: Round the padded length up.
    """
    longest = max(len(f["input_ids"]) for f in features)
    if multiple_of:
        longest = -(-longest // multiple_of) * multiple_of
    pads = dict(_PAD, input_ids=pad_id)
    batch = {}
    for key in SEQUENCE_KEYS:
        if key != "input_ids" and key != "attention_mask" and not any(key in f for f in features):
            continue
        rows = np.full((len(features), longest), pads[key], dtype=np.float32 if key == "loss_weights" else np.int64)
        for i, f in enumerate(features):
            values = f.get(key)
            if values is None:
                fill = 1 if key in ("attention_mask", "loss_weights") else 0
                values = np.full(len(f["input_ids"]), fill)
            if side == "right":
                rows[i, : len(values)] = np.asarray(values)
            else:
                rows[i, longest - len(values) :] = np.asarray(values)
        batch[key] = torch.from_numpy(rows).to(_DTYPES.get(key, torch.long))
    batch.update(merge_media(features))
    return batch


if __name__ == "__main__":
    print(pad_batch([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}], pad_id=0, side="left"))
