"""Uniform frame sampling with timestamps, from a tiny mp4 written here and from frame
folders.

Run: ``.venv/bin/python -m pytest tests/test_vtg_video.py -q``
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from model_garden.vtg.video import (
    VideoError,
    read_frame_folder,
    read_frames,
    read_video_frames,
    segment_centres,
    synthetic_colour,
    video_duration,
    write_synthetic_video,
)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """3 s at 8 fps, 64x64: 24 frames, frame k shown from k/8 s, red rising with time."""
    return write_synthetic_video(tmp_path_factory.mktemp("video") / "clip.mp4", seconds=3.0, fps=8, size=64)


def _mean_rgb(frame) -> np.ndarray:
    return np.asarray(frame, dtype=np.float64).reshape(-1, 3).mean(axis=0)


def test_segment_centres():
    assert segment_centres(3.0, 6) == pytest.approx([0.25, 0.75, 1.25, 1.75, 2.25, 2.75])
    with pytest.raises(ValueError, match="num_frames must be at least 1"):
        segment_centres(3.0, 0)


def test_duration_from_the_header(video):
    assert video_duration(video) == pytest.approx(3.0)


def test_sampled_frames_and_timestamps_agree(video):
    sampled = read_video_frames(video, num_frames=6)
    assert sampled.duration == pytest.approx(3.0)
    # Targets 0.25, 0.75, ... fall on frame boundaries (k/8 s): the frame shown then.
    assert sampled.timestamps == pytest.approx([0.25, 0.75, 1.25, 1.75, 2.25, 2.75])
    for t, frame in zip(sampled.timestamps, sampled.frames):
        assert isinstance(frame, Image.Image) and frame.size == (64, 64)
        assert _mean_rgb(frame) == pytest.approx(synthetic_colour(t, 3.0), abs=4)  # lossy H.264


def test_a_target_between_frames_takes_the_frame_on_screen(video):
    # 4 segments of 0.75 s: targets 0.375, 1.125, 1.875, 2.625 s; frames start every 0.125 s.
    sampled = read_video_frames(video, num_frames=4, as_numpy=True)
    assert sampled.timestamps == pytest.approx([0.375, 1.125, 1.875, 2.625])
    sampled = read_video_frames(video, num_frames=5)
    # targets 0.3, 0.9, 1.5, 2.1, 2.7 -> frames at 0.25, 0.875, 1.5, 2.0, 2.625
    assert sampled.timestamps == pytest.approx([0.25, 0.875, 1.5, 2.0, 2.625])
    for t, frame in zip(sampled.timestamps, sampled.frames):
        assert _mean_rgb(frame)[0] == pytest.approx(synthetic_colour(t, 3.0)[0], abs=4)


def test_numpy_frames_and_more_frames_than_the_video_has(video):
    sampled = read_video_frames(video, num_frames=48, as_numpy=True)
    assert len(sampled.frames) == 48 and sampled.frames[0].shape == (64, 64, 3) and sampled.frames[0].dtype == np.uint8
    assert sorted(set(sampled.timestamps)) == pytest.approx([k / 8 for k in range(24)])  # every frame, each twice


def test_missing_or_broken_video(tmp_path):
    with pytest.raises(FileNotFoundError, match="video .*nope.mp4 not found"):
        read_video_frames(tmp_path / "nope.mp4")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    with pytest.raises(VideoError, match=f"{broken}: not a readable video"):
        read_video_frames(broken)


def _frames(folder, names, size=8):
    folder.mkdir()
    for k, name in enumerate(names):
        Image.new("RGB", (size, size), (10 * k, 0, 0)).save(folder / name)
    return folder


def test_frame_folder_with_fps(tmp_path):
    # ffmpeg -vf fps=2 frame_%d.png: 10 frames, 5 s; natural order puts frame_10 last.
    folder = _frames(tmp_path / "v", [f"frame_{k}.png" for k in range(1, 11)])
    sampled = read_frames(folder, num_frames=5, fps=2.0)
    assert sampled.duration == 5.0
    # targets 0.5, 1.5, 2.5, 3.5, 4.5 s -> files 2, 4, 6, 8, 10 (0-based 1, 3, 5, 7, 9)
    assert sampled.timestamps == [0.5, 1.5, 2.5, 3.5, 4.5]
    assert [int(_mean_rgb(f)[0]) for f in sampled.frames] == [10, 30, 50, 70, 90]


def test_frame_folder_with_times_in_file_names(tmp_path):
    folder = _frames(tmp_path / "v", ["t_0.0.jpg", "t_1.5.jpg", "t_3.0.jpg", "t_4.5.jpg"])
    sampled = read_frame_folder(folder, num_frames=3, as_numpy=True)
    assert sampled.duration == 6.0  # last time + the 1.5 s step
    assert sampled.timestamps == [0.0, 3.0, 4.5]  # targets 1, 3, 5 s
    assert read_frame_folder(folder, num_frames=2, duration=3.0).timestamps == [0.0, 1.5]  # targets 0.75, 2.25


def test_frame_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="frame folder"):
        read_frame_folder(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoError, match="no image files"):
        read_frame_folder(empty)
    unnamed = _frames(tmp_path / "unnamed", ["first.png", "second.png"])
    with pytest.raises(VideoError, match="first.png: no time in the file name"):
        read_frame_folder(unnamed)
