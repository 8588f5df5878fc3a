"""Answer temporal grounding queries with a model: the engine of ``model-garden predict-vtg``.

Every annotation row becomes the prompt it was trained with (``VideoTemporalSFTDataset``
messages rendered by ``model_garden.masking.render_prompt``: the frames, the time
instruction and the first template of the run's template set, no answer), and the reply is
generated greedily in batches (``model_garden.inference.predict.generate_batch``). The
output is JSONL, one line per row in annotation order, flushed batch by batch::

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
import time
from pathlib import Path
from typing import Any

from model_garden.vtg.train import VTG_CONFIG_FILE, VTGConfig


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
    """Write one predicted answer per annotation row to ``out``.

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
        ``{"examples", "new_tokens", "seconds", "num_time_bins", "use_temporal_tokens"}``.
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("--batch-size and --max-new-tokens must be at least 1")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from model_garden.inference.predict import generate_batch, load_for_inference
    from model_garden.masking import is_processor, render_prompt

    vtg = run_config(model, video_dir, num_frames)
    # The first template, as evaluation papers prompt with one fixed phrasing.
    data = vtg.dataset(annotations, durations, seed=None, random=False)
    n = min(len(data), limit) if limit is not None else len(data)
    net, processor = load_for_inference(model)
    if not is_processor(processor):
        raise ValueError(f"--model {model} is a text model; predict-vtg needs a video-language model")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    columns = [TextColumn("predict-vtg"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    total_tokens, start = 0, time.perf_counter()
    with out.open("w", encoding="utf-8") as fh, Progress(*columns) as progress:
        task = progress.add_task("predict", total=n)
        for lo in range(0, n, batch_size):
            items = [data[i] for i in range(lo, min(lo + batch_size, n))]
            prompts, images, videos, metadata = [], [], [], []
            for item in items:
                text, conv = render_prompt(processor, item["messages"], multimodal=True, example=item["where"])
                prompts.append(text)
                images.append(conv.images)
                videos.append(conv.videos)
                metadata += (item["processor_kwargs"] or {}).get("video_metadata", [])
            kwargs = {"video_metadata": metadata} if metadata else None
            replies = generate_batch(
                net, processor, prompts, images=images, videos=videos, processor_kwargs=kwargs, max_new_tokens=max_new_tokens
            )
            for i, (reply, new_tokens) in enumerate(replies, start=lo):
                fh.write(json.dumps({"index": i, "output": reply}, ensure_ascii=False) + "\n")
                total_tokens += new_tokens
            fh.flush()
            progress.update(task, advance=len(items))
    return {
        "examples": n,
        "new_tokens": total_tokens,
        "seconds": time.perf_counter() - start,
        "num_time_bins": vtg.num_time_bins,
        "use_temporal_tokens": vtg.use_temporal_tokens,
    }
