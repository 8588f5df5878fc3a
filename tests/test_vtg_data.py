"""Charades-STA and ActivityNet Captions readers, on the real Charades-STA files and on
small hand-made ones.

Run: ``.venv/bin/python -m pytest tests/test_vtg_data.py -q``
"""

from __future__ import annotations

import json
import logging

import pytest

from model_garden.data.jsonl import DataError
from model_garden.vtg.data import Moment, read_activitynet_captions, read_annotations, read_charades_sta, read_durations


@pytest.fixture(scope="module")
def charades(shared_dir):
    return shared_dir / "data" / "charades_sta"


def test_charades_test_split(charades):
    moments, report = read_charades_sta(charades / "charades_sta_test.txt", charades / "durations_test.csv")
    assert len(moments) == report.rows == report.kept == 3720
    assert report.dropped == [] and report.skipped == []
    assert report.clipped == 562
    first = moments[0]
    assert first == Moment("3MSZA", 24.3, 30.4, "person turn a light on.", 30.96)
    assert first.where.endswith("charades_sta_test.txt:1")
    # The last line: "7JHW2 3.1 8.3##person sets a laptop computer on a counter."
    assert (moments[-1].video_id, moments[-1].start, moments[-1].end) == ("7JHW2", 3.1, 8.3)
    assert moments[-1].query == "person sets a laptop computer on a counter."
    assert len({m.video_id for m in moments}) == 1334
    assert all(0 <= m.start < m.end <= m.duration for m in moments)


def test_charades_train_split_drops_the_four_reversed_rows(charades, caplog):
    with caplog.at_level(logging.WARNING, logger="model_garden.vtg.data"):
        moments, report = read_charades_sta(charades / "charades_sta_train.txt", charades / "durations_train.csv")
    assert report.rows == 12408
    assert len(moments) == report.kept == 12404
    assert [d.split(":")[-2] for d in report.dropped] == ["8252", "8440", "9623", "9624"]
    assert report.dropped[0].endswith("charades_sta_train.txt:8252: start 8 >= end 7")  # LEOL6 8.0 7.0
    assert "4 dropped (start >= end)" in caplog.text and "8252" in caplog.text
    # "Y6R7T 20.8 30.0##person begins to play on a phone." ends past the video (29.42 s): clipped.
    assert moments[1] == Moment("Y6R7T", 20.8, 29.42, "person begins to play on a phone.", 29.42)
    assert report.clipped == 1802


def test_charades_without_durations_keeps_times_as_written(charades):
    moments, report = read_annotations(charades / "charades_sta_test.txt")
    assert len(moments) == 3720 and report.clipped == 0
    assert moments[0].duration is None and moments[0].end == 30.4


def test_durations_csv(charades, tmp_path):
    durations = read_durations(charades / "durations_test.csv")
    assert len(durations) == 1863 and durations["3MSZA"] == 30.96 and durations["YSKX3"] == 16.62
    bad = tmp_path / "d.csv"
    bad.write_text("id,length\nA,12.5\nB,long\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{bad}:3: length 'long' is not a number"):
        read_durations(bad)
    bad.write_text("video,seconds\nA,1\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{bad}:1: the header needs the columns id and length"):
        read_durations(bad)


def _charades(tmp_path, text):
    path = tmp_path / "ann.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("AAA 1.0 2.0 no separator", r"expected 'VIDEO_ID START END##sentence'"),
        ("AAA 1.0##a person", r"expected 'VIDEO_ID START END##sentence'"),
        ("AAA 1.0 2.0##   ", r"expected 'VIDEO_ID START END##sentence'"),
        ("AAA one 2.0##a person", r"start 'one' is not a number"),
        ("AAA 1.0 nan##a person", r"end 'nan' is not a finite number"),
        ("ZZZ 1.0 2.0##a person", r"video ZZZ has no duration"),
    ],
)
def test_charades_bad_line_names_file_and_line(tmp_path, line, message):
    path = _charades(tmp_path, f"AAA 0.0 1.0##fine.\n\n{line}\n")
    with pytest.raises(DataError, match=rf"{path}:3: {message}"):
        read_charades_sta(path, {"AAA": 10.0})


def test_charades_skip_bad_lines_reports_them(tmp_path):
    path = _charades(tmp_path, "AAA 0.0 1.0##fine.\nAAA 1.0##broken\nAAA 2.0 3.0##also fine.\n")
    moments, report = read_charades_sta(path, {"AAA": 10.0}, skip_bad_lines=True)
    assert [m.query for m in moments] == ["fine.", "also fine."]
    assert report.rows == 3 and report.kept == 2
    assert len(report.skipped) == 1 and report.skipped[0].startswith(f"{path}:2:")


def test_charades_clipping_and_dropping(tmp_path):
    path = _charades(tmp_path, "AAA -1.0 4.0##early.\nAAA 8.0 12.0##late.\nAAA 11.0 13.0##after the end.\nAAA 5.0 5.0##empty.\n")
    moments, report = read_charades_sta(path, {"AAA": 10.0})
    assert [(m.start, m.end) for m in moments] == [(0.0, 4.0), (8.0, 10.0)]
    assert report.clipped == 2
    assert report.dropped == [
        f"{path}:3: span 11-13 lies outside the video (0-10 s)",
        f"{path}:4: start 5 >= end 5",
    ]


def test_activitynet_captions(tmp_path):
    path = tmp_path / "val.json"
    path.write_text(
        json.dumps(
            {
                "v_a": {"duration": 82.73, "timestamps": [[0.28, 55.15], [13.79, 90.0]], "sentences": ["A man talks. ", "He plays."]},
                "v_b": {"duration": 20.0, "timestamps": [[12.0, 3.0]], "sentences": ["Reversed."]},
            }
        ),
        encoding="utf-8",
    )
    moments, report = read_annotations(path)
    assert moments == [Moment("v_a", 0.28, 55.15, "A man talks.", 82.73), Moment("v_a", 13.79, 82.73, "He plays.", 82.73)]
    assert moments[1].where == f"{path}:v_a[1]"
    assert report.rows == 3 and report.clipped == 1 and report.dropped == [f"{path}:v_b[0]: start 12 >= end 3"]


def test_activitynet_bad_entries_name_the_video(tmp_path):
    path = tmp_path / "val.json"
    path.write_text(json.dumps({"v_a": {"duration": 10, "timestamps": [[0, 1]], "sentences": []}}), encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:v_a: timestamps and sentences must be lists of equal length"):
        read_activitynet_captions(path)
    path.write_text(json.dumps({"v_a": {"duration": 10, "timestamps": [[0, "x"]], "sentences": ["s"]}}), encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:v_a\[0\]: end 'x' is not a number"):
        read_activitynet_captions(path)
    path.write_text('{"v_a": ', encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:1: not JSON"):
        read_activitynet_captions(path)
    with pytest.raises(ValueError, match="carry their own durations"):
        read_annotations(path, {"v_a": 10.0})
