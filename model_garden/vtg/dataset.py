"""``VideoTemporalSFTDataset``: grounding annotations as chat examples for fine-tuning.

Each item is an OpenAI-style conversation: the user turn holds the video and the
question, the assistant turn the answer, ``[12.3, 20.0]`` (seconds) or
``<|box_start|><39><64><|box_end|>`` (temporal tokens). The mask engine
(``model_garden.masking.build_example``) then trains only the answer.

Timing in the prompt: a model can only answer in seconds if it knows when its frames
were taken. The user text starts with the time instruction LLaVA-Video introduced and
Qwen2-VL / TimeChat fine-tunes commonly copy::

    The video lasts for 30.96 seconds, and 8 frames are uniformly sampled from it.
    These frames are located at 1.88s, 5.69s, ... .

The times listed are those of the frames actually decoded (see ``model_garden.vtg.video``),
so prompt, frames and answer agree. The duration is the annotation's (the one temporal
tokens and evaluation use), or the file's when the annotations have none.

How the video reaches the model (``frames_as``):

* ``"video"`` (default): one ``{"type": "video", "video": [frames]}`` part, Qwen2-VL's
  native video input (without torchvision, through ``model_garden.vision_compat``), with
  the clip's sampling rate in ``processor_kwargs`` (``video_metadata``).
* ``"images"``: one image part per frame, each after a ``"1.88s:"`` text part; works with
  image-only processors (the PIL ones, e.g. where torchvision is missing).
* ``"path"``: the part holds the file path, for processors that decode and sample videos
  themselves; the prompt then gives only the duration, since frame times are the
  processor's choice.

Frames are decoded in ``__getitem__``, never up front.

Try it: ``python -m model_garden.vtg.dataset ANNOTATIONS VIDEO_DIR [DURATIONS.csv]``
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model_garden.data.sample import Sample
from model_garden.vtg.data import Moment, ReadReport, read_annotations
from model_garden.vtg.prompt_templates import TemplateSelector, check_template
from model_garden.vtg.temporal_tokens import span_to_tokens
from model_garden.vtg.video import VideoError, read_frames, video_duration

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")
FRAMES_AS = ("video", "images", "path")


def time_instruction(duration: float, timestamps: Sequence[float] | None) -> str:
    """The sentence that tells the model the video's length and its frames' times."""
    if timestamps is None:
        return f"The video lasts for {duration:.2f} seconds."
    located = ", ".join(f"{t:.2f}s" for t in timestamps)
    return (
        f"The video lasts for {duration:.2f} seconds, and {len(timestamps)} frames are uniformly sampled from it. "
        f"These frames are located at {located}."
    )


def video_metadata(num_frames: int, duration: float) -> dict[str, Any]:
    """transformers' ``video_metadata`` for ``num_frames`` frames sampled uniformly over
    ``duration`` seconds. Its ``sampled_fps`` (``num_frames / duration``) is what
    Qwen2.5-VL's processor turns into ``second_per_grid_ts``, the seconds each temporal
    patch spans, so video tokens sit at their real times whatever the clip's length."""
    return {"total_num_frames": num_frames, "fps": num_frames / duration, "frames_indices": list(range(num_frames)), "duration": duration}


def format_seconds_answer(start: float, end: float, decimals: int = 1) -> str:
    """``[start, end]`` with ``decimals`` digits, the answer of the standard templates."""
    return f"[{start:.{decimals}f}, {end:.{decimals}f}]"


class VideoTemporalSFTDataset:
    """Temporal grounding examples as chat messages, frames loaded on access.

    Args:
        annotation_file: Charades-STA text file or ActivityNet Captions JSON.
        video_dir: Folder of videos: ``VIDEO_ID.mp4`` (or .mkv, .webm, .avi, .mov) files,
            or ``VIDEO_ID/`` folders of frames.
        use_temporal_tokens: Answer with temporal tokens instead of seconds.
        use_random_templates: Vary the prompt template per sample (else always the first).
        template_seed: Make each sample's template a function of (seed, index).
        prompt_template: One fixed template with a ``{query}`` slot; disables random choice.
        num_frames: Frames sampled per video.
        num_time_bins: Temporal bins (``<0>`` ... ``<N-1>``) with ``use_temporal_tokens``.
        durations_file: Charades-STA durations CSV (``id,length``).
        templates: Templates to choose from instead of the built-in ones.
        frames_as: ``video``, ``images`` or ``path`` (see the module docstring).
        frame_fps: Frame rate of frame folders (else times come from file names).
        decimals: Digits after the point in ``[start, end]`` answers.
        skip_bad_lines: Skip malformed annotation rows (listed in ``self.report``).
    """

    def __init__(
        self,
        annotation_file: str | Path,
        video_dir: str | Path,
        use_temporal_tokens: bool = False,
        use_random_templates: bool = True,
        template_seed: int | str | None = None,
        prompt_template: str | None = None,
        num_frames: int = 8,
        num_time_bins: int = 100,
        durations_file: str | Path | None = None,
        *,
        templates: Sequence[str] | None = None,
        frames_as: str = "video",
        frame_fps: float | None = None,
        decimals: int = 1,
        skip_bad_lines: bool = False,
    ):
        if num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {num_frames}")
        if use_temporal_tokens and num_time_bins < 2:
            raise ValueError(f"num_time_bins must be at least 2, got {num_time_bins}")
        if frames_as not in FRAMES_AS:
            raise ValueError(f"frames_as must be one of {', '.join(FRAMES_AS)}, got {frames_as!r}")
        if prompt_template is not None and templates is not None:
            raise ValueError("give prompt_template (one fixed template) or templates (to choose from), not both")
        self.video_dir = Path(video_dir)
        if not self.video_dir.is_dir():
            raise FileNotFoundError(f"video_dir {self.video_dir} not found")
        self.moments: list[Moment]
        self.report: ReadReport
        self.moments, self.report = read_annotations(annotation_file, durations_file, skip_bad_lines=skip_bad_lines)
        if prompt_template is not None:
            check_template(prompt_template, "prompt_template")
            self.selector = TemplateSelector(use_temporal_tokens, random_selection=False, templates=[prompt_template])
        else:
            self.selector = TemplateSelector(
                use_temporal_tokens, random_selection=use_random_templates, seed=template_seed, templates=templates
            )
        self.use_temporal_tokens = use_temporal_tokens
        self.num_frames = num_frames
        self.num_time_bins = num_time_bins
        self.frames_as = frames_as
        self.frame_fps = frame_fps
        self.decimals = decimals
        # What training and prediction read (a SampleSource): rows were checked on reading.
        self.name = str(annotation_file)
        self.base_dir = self.video_dir.resolve()
        self.skipped: list = []

    def __len__(self) -> int:
        return len(self.moments)

    def video_path(self, idx: int) -> Path:
        """The video file or frame folder of sample ``idx``."""
        moment = self.moments[idx]
        for suffix in VIDEO_SUFFIXES:
            path = self.video_dir / f"{moment.video_id}{suffix}"
            if path.is_file():
                return path
        if (self.video_dir / moment.video_id).is_dir():
            return self.video_dir / moment.video_id
        raise FileNotFoundError(
            f"{moment.where}: no video for {moment.video_id} in {self.video_dir} "
            f"(looked for {moment.video_id}{{{','.join(VIDEO_SUFFIXES)}}} and a frame folder {moment.video_id}/)"
        )

    def answer(self, idx: int, duration: float | None = None) -> str:
        """The assistant's answer for sample ``idx``; ``duration`` is needed for temporal
        tokens when the annotations have none."""
        moment = self.moments[idx]
        if self.use_temporal_tokens:
            duration = moment.duration or duration
            if duration is None:
                raise ValueError(f"{moment.where}: temporal tokens need the video's duration (pass durations_file)")
            return span_to_tokens(moment.start, moment.end, duration, self.num_time_bins)
        return format_seconds_answer(moment.start, moment.end, self.decimals)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        """Sample ``idx``: ``messages`` (user: video + prompt, assistant: answer), and
        ``video_id``, ``query``, ``start``, ``end``, ``duration``, ``timestamps``
        (``None`` for ``frames_as="path"``), ``where`` (annotation file:line) and
        ``processor_kwargs`` (for ``frames_as="video"``, the clip's ``video_metadata``,
        which ``build_example`` passes to the processor; else ``None``)."""
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} samples")
        idx %= len(self)
        moment = self.moments[idx]
        source = self.video_path(idx)
        prompt = self.selector.format(moment.query, idx)
        timestamps: list[float] | None = None
        processor_kwargs: dict[str, Any] | None = None
        if self.frames_as == "path":
            if source.is_dir():
                raise VideoError(f"{moment.where}: frames_as='path' needs a video file, {source} is a frame folder")
            duration = moment.duration or video_duration(source)
            media: list[dict[str, Any]] = [{"type": "video", "video": str(source)}]
        else:
            sampled = read_frames(source, self.num_frames, fps=self.frame_fps, duration=moment.duration)
            duration, timestamps = moment.duration or sampled.duration, sampled.timestamps
            if abs(sampled.duration - duration) > max(1.0, 0.05 * duration):
                warnings.warn(
                    f"{moment.where}: {source} lasts {sampled.duration:.2f} s but the annotations say {duration:.2f} s; "
                    "answers may not match the frames",
                    stacklevel=2,
                )
            if self.frames_as == "video":
                media = [{"type": "video", "video": sampled.frames}]
                processor_kwargs = {"video_metadata": [video_metadata(len(timestamps), duration)]}
            else:
                media = []
                for t, frame in zip(timestamps, sampled.frames):
                    media += [{"type": "text", "text": f"{t:.2f}s:"}, {"type": "image", "image": frame}]
        text = f"{time_instruction(duration, timestamps)}\n{prompt}"
        return {
            "messages": [
                {"role": "user", "content": [*media, {"type": "text", "text": text}]},
                {"role": "assistant", "content": self.answer(idx, duration)},
            ],
            "video_id": moment.video_id,
            "query": moment.query,
            "start": moment.start,
            "end": moment.end,
            "duration": duration,
            "timestamps": timestamps,
            "where": moment.where,
            "processor_kwargs": processor_kwargs,
        }


    def sample(self, idx: int) -> Sample:
        """Sample ``idx`` as the codec reads it (messages, name, the clip's processor arguments)."""
        item = self[idx]
        return Sample(item["messages"], where=item["where"], line=idx + 1, processor_kwargs=item["processor_kwargs"])

    def where(self, idx: int) -> str:
        """The annotation row of sample ``idx``, for messages."""
        return self.moments[idx].where


if __name__ == "__main__":
    data = VideoTemporalSFTDataset(sys.argv[1], sys.argv[2], durations_file=sys.argv[3] if len(sys.argv) > 3 else None)
    print(data.report.summary())
    item = data[0]
    for message in item["messages"]:
        parts = message["content"] if isinstance(message["content"], list) else [{"type": "text", "text": message["content"]}]
        shown = [p["text"] if p["type"] == "text" else f"<{p['type']}>" for p in parts]
        print(f"{message['role']}: {' '.join(shown)}")
