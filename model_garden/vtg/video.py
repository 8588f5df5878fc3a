"""Sample frames uniformly from a video, and know when each one was shown.

A grounding answer is in seconds, so the frames a model sees must come with their times.
Sampling: the video is cut into ``num_frames`` equal segments and each segment's centre
is a target time (``(i + 0.5) * duration / num_frames``); for each target the frame on
screen at that moment is taken (the last frame whose timestamp is not after it). The
frame's own timestamp is returned, not the target, so a prompt that lists the timestamps
describes exactly the frames shown.

Sources:

* video files (mp4, mkv, webm, ...), decoded with PyAV in one forward pass that stops
  after the last target, converting only the chosen frames;
* folders of frames: image files in natural order (``frame_2`` before ``frame_10``). With
  ``fps``, the k-th file (0-based) is at ``k / fps`` seconds, as ffmpeg's
  ``-vf fps=F frame_%05d.jpg`` writes them, and the duration is ``count / fps``. Without
  it, the last number in each file's name is its time in seconds (``t_12.50.jpg``) and the
  duration is the last time plus the median gap between frames.

``write_synthetic_video`` makes a tiny mp4 whose colour changes over time, for tests.

Try it: ``python -m model_garden.vtg.video VIDEO.mp4 [NUM_FRAMES]``
"""

from __future__ import annotations

import bisect
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")


class VideoError(ValueError):
    """A video or frame folder cannot be read; the message names it."""


@dataclass
class SampledFrames:
    """Frames of one video and when they are shown.

    Attributes:
        frames: RGB frames (PIL images, or ``uint8`` arrays of shape ``(H, W, 3)``).
        timestamps: Each frame's time in seconds.
        duration: Length of the video in seconds.
    """

    frames: list[Any]
    timestamps: list[float]
    duration: float


def segment_centres(duration: float, num_frames: int) -> list[float]:
    """Target times: the centres of ``num_frames`` equal segments of ``[0, duration]``."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    return [(i + 0.5) * duration / num_frames for i in range(num_frames)]


def _on_screen(times: list[float], targets: list[float]) -> list[int]:
    """For each target, the index of the last time not after it (the first if none)."""
    return [max(bisect.bisect_right(times, t + 1e-9) - 1, 0) for t in targets]


def _video_duration(container: Any, stream: Any, where: str) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # microseconds (av.time_base)
    if stream.frames and stream.average_rate:
        return float(stream.frames / stream.average_rate)
    raise VideoError(f"{where}: the video does not say how long it is")


def video_duration(path: str | Path) -> float:
    """Length of a video file in seconds, from its header (nothing is decoded)."""
    try:
        with av.open(str(path)) as container:
            return _video_duration(container, container.streams.video[0], str(path))
    except (av.FFmpegError, IndexError) as exc:
        raise VideoError(f"{path}: not a readable video ({exc})") from None


def read_video_frames(path: str | Path, num_frames: int = 8, *, as_numpy: bool = False) -> SampledFrames:
    """Sample ``num_frames`` frames uniformly from a video file with PyAV.

    Raises:
        FileNotFoundError: the file does not exist.
        VideoError: it has no video stream or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} not found")
    chosen: list[Any] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            duration = _video_duration(container, stream, str(path))
            targets = segment_centres(duration, num_frames)
            previous = None
            for frame in container.decode(stream):
                # Frames come out in presentation order; the one before the first frame
                # past a target was on screen at that target.
                while len(chosen) < num_frames and frame.time > targets[len(chosen)] + 1e-9:
                    chosen.append(frame if previous is None else previous)
                if len(chosen) == num_frames:
                    break
                previous = frame
            if previous is None and not chosen:
                raise VideoError(f"{path}: no frame could be decoded")
            chosen += [previous] * (num_frames - len(chosen))
            frames = [f.to_ndarray(format="rgb24") if as_numpy else f.to_image() for f in chosen]
    except av.FFmpegError as exc:
        raise VideoError(f"{path}: not a readable video ({exc})") from None
    return SampledFrames(frames, [float(f.time) for f in chosen], duration)


def _natural_key(path: Path) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name)]


def read_frame_folder(
    folder: str | Path,
    num_frames: int = 8,
    *,
    fps: float | None = None,
    duration: float | None = None,
    as_numpy: bool = False,
) -> SampledFrames:
    """Sample ``num_frames`` frames uniformly from a folder of images.

    Args:
        folder: The folder.
        num_frames: How many frames to return.
        fps: Frames per second of the folder; without it times come from the file names.
        duration: The video's length, if known better than the folder tells.
        as_numpy: Return ``uint8`` arrays instead of PIL images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder {folder} not found")
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
    if not files:
        raise VideoError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    if fps is not None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        times = [k / fps for k in range(len(files))]
        length = len(files) / fps
    else:
        times = []
        for p in files:
            numbers = _NUMBER_RE.findall(p.stem)
            if not numbers:
                raise VideoError(f"{p}: no time in the file name; name frames by their time in seconds or pass fps")
            times.append(float(numbers[-1]))
        order = sorted(range(len(files)), key=times.__getitem__)
        files, times = [files[i] for i in order], [times[i] for i in order]
        gaps = [b - a for a, b in zip(times, times[1:])]
        length = times[-1] + (statistics.median(gaps) if gaps else 0.0)
    length = duration if duration is not None else length
    if not length > 0:
        raise VideoError(f"{folder}: cannot tell the video's length; pass fps or duration")
    picked = _on_screen(times, segment_centres(length, num_frames))
    frames = []
    for i in picked:
        try:
            with Image.open(files[i]) as img:
                rgb = img.convert("RGB")
        except OSError as exc:
            raise VideoError(f"{files[i]}: unreadable image ({exc})") from None
        frames.append(np.asarray(rgb) if as_numpy else rgb)
    return SampledFrames(frames, [times[i] for i in picked], length)


def read_frames(source: str | Path, num_frames: int = 8, **kwargs: Any) -> SampledFrames:
    """``read_frame_folder`` for a folder, ``read_video_frames`` for a file (``fps`` and
    ``duration`` only apply to folders: a file's header knows both)."""
    if Path(source).is_dir():
        return read_frame_folder(source, num_frames, **kwargs)
    kwargs.pop("fps", None)
    kwargs.pop("duration", None)
    return read_video_frames(source, num_frames, **kwargs)


def synthetic_colour(t: float, seconds: float) -> tuple[int, int, int]:
    """The colour ``write_synthetic_video`` shows at time ``t``: red rises from 0 to 255."""
    red = round(255 * min(max(t / seconds, 0.0), 1.0))
    return red, 64, 255 - red


def write_synthetic_video(path: str | Path, seconds: float = 3.0, fps: int = 8, size: int = 64) -> Path:
    """Write an H.264 mp4 whose frame at time ``t`` is filled with ``synthetic_colour(t)``."""
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10"}
        for k in range(round(seconds * fps)):
            pixels = np.empty((size, size, 3), dtype=np.uint8)
            pixels[:] = synthetic_colour(k / fps, seconds)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


if __name__ == "__main__":
    sampled = read_frames(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8)
    print(f"duration {sampled.duration:.2f} s")
    for t, f in zip(sampled.timestamps, sampled.frames):
        print(f"{t:8.3f} s  {f.size}")
