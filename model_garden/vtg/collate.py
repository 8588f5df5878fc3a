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

Try it: ``python -m model_garden.vtg.collate`` collates two synthetic videos with the tiny
Qwen2-VL and prints what is trained.
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


if __name__ == "__main__":
    import tempfile
    from pathlib import Path

    from model_garden.testing import tiny_qwen2_vl
    from model_garden.vtg.dataset import VideoTemporalSFTDataset
    from model_garden.vtg.video import write_synthetic_video

    folder = Path(tempfile.mkdtemp())
    for name, seconds in (("AAAAA", 3.0), ("BBBBB", 4.0)):
        write_synthetic_video(folder / f"{name}.mp4", seconds=seconds)
    (folder / "ann.txt").write_text("AAAAA 0.5 2.0##a person opens a door.\nBBBBB 1.0 3.5##a person sits down.\n")
    (folder / "durations.csv").write_text("id,length\nAAAAA,3.0\nBBBBB,4.0\n")
    _, processor = tiny_qwen2_vl("2.5")
    data = VideoTemporalSFTDataset(folder / "ann.txt", folder, durations_file=folder / "durations.csv", num_frames=4)
    batch = SFTCollator(processor)([data[0], data[1]])
    tokenizer = processor.tokenizer
    for row, labels in zip(batch["input_ids"], batch["labels"]):
        trained = [int(t) for t, label in zip(row, labels) if label != -100]
        print(f"{len(row)} tokens, {len(trained)} trained: {tokenizer.decode(trained)!r}")
    print("second_per_grid_ts", batch["second_per_grid_ts"].tolist())
