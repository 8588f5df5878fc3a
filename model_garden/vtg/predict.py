"""Answer temporal grounding queries with a model: the engine of ``model-garden predict-vtg``.

Every annotation row becomes the prompt it was trained with (``VideoTemporalSFTDataset``
samples: the frames, the time instruction and the first template of the run's template
set, no answer), encoded by the model's ``ChatCodec`` and answered greedily in batches by
the same loop as ``predict`` (``model_garden.inference.predict.predict_samples``). The
output is JSONL, one line per row in annotation order::

    {"index": 0, "output": "<|box_start|><39><64><|box_end|>"}

which ``model-garden evaluate-vtg`` scores (``model_garden.vtg.report``). Temporal tokens
are kept in the text (the bin tokens are not special), so evaluate-vtg can convert them
with the same ``--num-bins``.

The prompting options (temporal tokens, bins, frames, frame layout, templates) come from
the training run's ``vtg_config.yaml``; a folder without one (a base model) gets the
defaults: ``[start, end]`` answers from 8 frames.

Try it: ``model-garden predict-vtg --model outputs/vtg --annotations charades_sta_test.txt
--durations durations_test.csv --video-dir videos/ --out preds.jsonl``
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from model_garden.data.sample import Sample
from model_garden.data.sources import SampleView
from model_garden.inference.confidence import Reply
from model_garden.inference.loading import hf_generator, load_for_inference
from model_garden.inference.predict import predict_samples
from model_garden.masking.codec import ChatCodec
from model_garden.models import is_processor
from model_garden.vtg.config import VTG_CONFIG_FILE, VTGConfig


def run_config(model: str | Path, video_dir: str | Path, num_frames: int | None = None) -> VTGConfig:
    """The prompting options a model was trained with (defaults without a ``vtg_config.yaml``)."""
    saved = Path(model).expanduser() / VTG_CONFIG_FILE
    vtg = VTGConfig.load(saved) if saved.is_file() else VTGConfig()
    changes: dict[str, Any] = {"video_dir": str(video_dir)}
    if num_frames is not None:
        changes["num_frames"] = num_frames
    return dataclasses.replace(vtg, **changes)


def predict_vtg(
    model: str | Path,
    annotations: str | Path,
    video_dir: str | Path,
    out: str | Path,
    *,
    durations: str | Path | None = None,
    limit: int | None = None,
    batch_size: int = 4,
    max_new_tokens: int = 32,
    num_frames: int | None = None,
) -> dict[str, Any]:
    """Write one predicted answer per annotation row to ``out`` (replaced when complete).

    Args:
        model: Training output folder, Hugging Face model folder or ``--base-model`` value.
        annotations: Charades-STA .txt or ActivityNet Captions .json.
        video_dir: Folder of the videos.
        out: The predictions JSONL to write.
        durations: Charades-STA durations CSV (needed for temporal tokens).
        limit: Only the first N rows.
        batch_size: Prompts generated together.
        max_new_tokens: Generation budget per answer.
        num_frames: Frames per video, instead of the run's.

    Returns:
        ``{"examples", "new_tokens", "seconds", "cut", "num_time_bins", "use_temporal_tokens"}``.
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("--batch-size and --max-new-tokens must be at least 1")
    vtg = run_config(model, video_dir, num_frames)
    # The first template, as evaluation papers prompt with one fixed phrasing.
    data = vtg.dataset(annotations, durations, seed=None, random=False)
    net, processor = load_for_inference(model)
    if not is_processor(processor):
        raise ValueError(f"--model {model} is a text model; predict-vtg needs a video-language model")
    codec = ChatCodec.for_data(processor, data.base_dir)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with partial.open("w", encoding="utf-8") as fh:

        def write(sample: Sample, reply: Reply) -> None:
            fh.write(json.dumps({"index": sample.line - 1, "output": reply.text}, ensure_ascii=False) + "\n")
            fh.flush()

        stats = predict_samples(
            hf_generator(net, processor), codec, SampleView(data, limit), write,
            batch_size=batch_size, max_new_tokens=max_new_tokens, label="predict-vtg",
        )
    os.replace(partial, out)
    return {**stats, "num_time_bins": vtg.num_time_bins, "use_temporal_tokens": vtg.use_temporal_tokens}
