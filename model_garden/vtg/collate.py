"""``SFTCollator``: temporal grounding examples into a padded batch, loss on the answer only.

The notes' collator re-tokenised the prompt to guess where the answer starts; with video
tokens expanded by the processor that guess is off. Here each example is built once by
the mask engine (``model_garden.masking.build_example``), which locates the answer in
the rendered chat exactly, so:

* trained: the assistant answer (``[12.3, 20.0]`` or ``<|box_start|><39><64><|box_end|>``)
  and the end-of-turn token after it (``<|im_end|>``), so the model learns to stop;
* masked (label -100): the system and user turns, the role headers, every video/image
  token and padding. Padding is masked by position, not by token id, so a pad id that
  equals an end-of-turn id does not mask the trained end of turn.

Each item's ``processor_kwargs`` (the clip's ``video_metadata`` from
``VideoTemporalSFTDataset``) reach the processor, so Qwen2.5-VL's
``second_per_grid_ts`` matches the real sampling rate, ``len(timestamps) / duration``.

    from vtg_datasets.collate_fns import SFTCollator
    from vtg_datasets.video_dataset import VideoTemporalSFTDataset

    data = VideoTemporalSFTDataset("charades_sta_train.txt", "videos/", durations_file="Charades_v1_train.csv")
    batch = SFTCollator(processor, max_length=4096)([data[0], data[1]])

Tested in ``tests/test_vtg_dataset.py``, which collates synthetic videos with a tiny
Qwen2-VL and checks what is trained.
"""

from __future__ import annotations

from typing import Any

from model_garden.masking import MaskConfig
from model_garden.training.collate import StructuredOutputDataCollator


class SFTCollator(StructuredOutputDataCollator):
    """Build ``VideoTemporalSFTDataset`` items with the mask engine and pad them.

    Args:
        processor: The vision-language processor (or a tokenizer for text-only chats).
        max_length: Truncate examples to this many tokens (never through video tokens).
        mask_config: The masking policy; response-only (``strategy="none"``) by default.
        pad_to_multiple_of: Round the padded length up.
    """

    def __init__(
        self,
        processor: Any,
        max_length: int | None = None,
        mask_config: MaskConfig | None = None,
        pad_to_multiple_of: int | None = None,
    ):
        super().__init__(
            processing=processor,
            mask_config=mask_config or MaskConfig(),
            max_length=max_length,
            pad_to_multiple_of=pad_to_multiple_of,
        )

