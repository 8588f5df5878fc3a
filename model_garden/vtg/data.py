"""Read temporal grounding annotations into ``Moment`` rows.

Formats:

* Charades-STA: text lines ``VIDEO_ID START END##sentence`` (times in seconds), with the
  video lengths in a CSV file whose header has ``id`` and ``length``;
* ActivityNet Captions: JSON ``{video_id: {"duration": d, "timestamps": [[s, e], ...],
  "sentences": [...]}}``.

Every row is cleaned the same way: times are clipped to ``[0, duration]`` (annotators'
end times often run past the end of the video), and a row whose start is not before its
end after clipping is dropped. Dropped rows are logged (count and examples) and listed
in the returned ``ReadReport``, so nothing disappears silently. A malformed row raises a
``DataError`` naming the file and line (or video id), or, with ``skip_bad_lines=True``,
is skipped and listed in the report.

Try it: ``python -m model_garden.vtg.data ANNOTATIONS [DURATIONS.csv]``
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_garden.data.jsonl import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Moment:
    """One query and its gold time span.

    Attributes:
        video_id: The video's id (its file name without extension).
        start: Start of the span in seconds.
        end: End of the span in seconds (after clipping to ``duration``).
        query: The sentence describing the moment.
        duration: Length of the video in seconds, if the annotations give it.
        where: ``file:line`` (or ``file:video_id[k]``) of the row, for messages.
    """

    video_id: str
    start: float
    end: float
    query: str
    duration: float | None = None
    where: str = field(default="", compare=False)


@dataclass
class ReadReport:
    """What reading an annotation file did.

    Attributes:
        path: The annotation file.
        rows: Rows read (queries in the file).
        kept: Rows returned.
        clipped: Kept rows whose times were clipped to the video's duration.
        dropped: ``"file:line: reason"`` for rows dropped because start >= end.
        skipped: Errors of malformed rows skipped with ``skip_bad_lines=True``.
    """

    path: str
    rows: int = 0
    kept: int = 0
    clipped: int = 0
    dropped: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self, examples: int = 3) -> str:
        """One line for logs: counts, and the first few dropped or skipped rows."""
        text = f"{self.path}: {self.rows} rows, {self.kept} kept, {self.clipped} clipped to the video duration"
        for name, items in (("dropped (start >= end)", self.dropped), ("skipped (malformed)", self.skipped)):
            if items:
                text += f"; {len(items)} {name}, e.g. " + "; ".join(items[:examples])
        return text


def _number(text: Any, what: str, where: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {what} {text!r} is not a finite number")
    return value


def read_durations(path: str | Path) -> dict[str, float]:
    """Read video lengths from a CSV file with ``id`` and ``length`` columns (seconds).

    Raises:
        DataError: naming the file and line of a bad row or a missing column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"durations file {path} not found")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"id", "length"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path}:1: the header needs the columns id and length, got {reader.fieldnames}")
        out = {}
        for row in reader:
            where = f"{path}:{reader.line_num}"
            length = _number(row["length"], "length", where)
            if length <= 0:
                raise DataError(f"{where}: length {length} must be positive")
            out[row["id"].strip()] = length
    return out


class _Collector:
    """Clips rows, counts them and decides what a bad row does."""

    def __init__(self, path: Path, skip_bad_lines: bool):
        self.report = ReadReport(path=str(path))
        self.moments: list[Moment] = []
        self.skip_bad_lines = skip_bad_lines

    def bad(self, exc: DataError) -> None:
        if not self.skip_bad_lines:
            raise exc
        self.report.rows += 1
        self.report.skipped.append(str(exc))

    def add(self, video_id: str, start: float, end: float, query: str, duration: float | None, where: str) -> None:
        self.report.rows += 1
        clipped_start, clipped_end = max(start, 0.0), end
        if duration is not None:
            clipped_start, clipped_end = min(clipped_start, duration), min(end, duration)
        if clipped_start >= clipped_end:
            if start >= end:
                reason = f"start {start:g} >= end {end:g}"
            else:
                reason = f"span {start:g}-{end:g} lies outside the video" + (f" (0-{duration:g} s)" if duration is not None else "")
            self.report.dropped.append(f"{where}: {reason}")
            return
        self.report.clipped += (clipped_start, clipped_end) != (start, end)
        self.moments.append(Moment(video_id, clipped_start, clipped_end, query, duration, where))
        self.report.kept += 1

    def finish(self) -> tuple[list[Moment], ReadReport]:
        if self.report.dropped or self.report.skipped:
            log.warning("%s", self.report.summary())
        return self.moments, self.report


def read_charades_sta(
    path: str | Path,
    durations: str | Path | dict[str, float] | None = None,
    *,
    skip_bad_lines: bool = False,
) -> tuple[list[Moment], ReadReport]:
    """Read a Charades-STA annotation file (``VIDEO_ID START END##sentence`` lines).

    Args:
        path: The annotation file.
        durations: A durations CSV (see ``read_durations``) or a ready mapping; without
            it ``Moment.duration`` is ``None`` and end times are not clipped.
        skip_bad_lines: Skip malformed lines (listed in the report) instead of raising.

    Returns:
        The kept moments in file order, and the report.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} not found")
    lengths = read_durations(durations) if isinstance(durations, (str, Path)) else durations
    lengths_name = durations if isinstance(durations, (str, Path)) else "the durations"
    rows = _Collector(path, skip_bad_lines)
    with path.open(encoding="utf-8", newline=None) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                head, sep, query = line.rstrip("\n").partition("##")
                fields = head.split()
                if not sep or len(fields) != 3 or not query.strip():
                    raise DataError(f"{where}: expected 'VIDEO_ID START END##sentence', got {line.strip()!r}")
                video_id = fields[0]
                start = _number(fields[1], "start", where)
                end = _number(fields[2], "end", where)
                duration = None
                if lengths is not None:
                    if video_id not in lengths:
                        raise DataError(f"{where}: video {video_id} has no duration in {lengths_name}")
                    duration = lengths[video_id]
            except DataError as exc:
                rows.bad(exc)
                continue
            rows.add(video_id, start, end, query.strip(), duration, where)
    return rows.finish()


def read_activitynet_captions(path: str | Path, *, skip_bad_lines: bool = False) -> tuple[list[Moment], ReadReport]:
    """Read an ActivityNet Captions file (``{video_id: {duration, timestamps, sentences}}``).

    Args:
        path: The JSON file.
        skip_bad_lines: Skip malformed videos or sentences (listed in the report) instead
            of raising.

    Returns:
        The kept moments, videos in file order and sentences in their order, and the report.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object mapping video ids to annotations")
    rows = _Collector(path, skip_bad_lines)
    for video_id, ann in data.items():
        where = f"{path}:{video_id}"
        try:
            if not isinstance(ann, dict) or not {"duration", "timestamps", "sentences"} <= ann.keys():
                raise DataError(f"{where}: expected an object with duration, timestamps and sentences")
            duration = _number(ann["duration"], "duration", where)
            stamps, sentences = ann["timestamps"], ann["sentences"]
            if not isinstance(stamps, list) or not isinstance(sentences, list) or len(stamps) != len(sentences):
                raise DataError(f"{where}: timestamps and sentences must be lists of equal length")
        except DataError as exc:
            rows.bad(exc)
            continue
        for k, (span, sentence) in enumerate(zip(stamps, sentences)):
            here = f"{where}[{k}]"
            try:
                if not isinstance(span, (list, tuple)) or len(span) != 2:
                    raise DataError(f"{here}: timestamp {span!r} is not a [start, end] pair")
                if not isinstance(sentence, str) or not sentence.strip():
                    raise DataError(f"{here}: sentence {sentence!r} is empty or not text")
                start, end = _number(span[0], "start", here), _number(span[1], "end", here)
            except DataError as exc:
                rows.bad(exc)
                continue
            rows.add(video_id, start, end, sentence.strip(), duration, here)
    return rows.finish()


def read_annotations(
    path: str | Path,
    durations: str | Path | dict[str, float] | None = None,
    *,
    skip_bad_lines: bool = False,
) -> tuple[list[Moment], ReadReport]:
    """Read either format: ``.json`` is ActivityNet Captions, anything else Charades-STA."""
    if Path(path).suffix.lower() == ".json":
        if durations is not None:
            raise ValueError(f"{path}: ActivityNet Captions files carry their own durations; drop --durations")
        return read_activitynet_captions(path, skip_bad_lines=skip_bad_lines)
    return read_charades_sta(path, durations, skip_bad_lines=skip_bad_lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    moments, report = read_annotations(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
    print(report.summary())
    for m in moments[:3]:
        print(m)
