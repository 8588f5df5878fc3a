"""Stream JSONL datasets: one record per line, in any layout ``data.sample`` reads
(OpenAI ``messages``, TRL ``prompt``/``completion``, ShareGPT ``conversations``).

Files are never loaded whole: ``iter_records`` streams, and ``JsonlDataset`` keeps only
the byte offset of each line and parses a line when it is asked for, so a 100k-line file
with inline base64 images costs a few hundred kilobytes of memory. Every problem names
the file and line.

Try it: ``python -m model_garden.data.jsonl FILE.jsonl`` prints the first record.
"""

from __future__ import annotations

import hashlib
import json
import sys
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from model_garden.data.sample import DataError, Sample, to_sample

__all__ = ["DataError", "JsonlDataset", "Sample", "file_sha256", "iter_lines", "iter_records", "parse_line"]



def parse_line(raw: str | bytes, where: str, *, line: int | None = None, require_reply: bool = True) -> Sample | None:
    """Parse and check one line; ``None`` for a blank line.

    Raises:
        DataError: naming ``where`` and the reason.
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})", line) from None
    raw = raw.lstrip("\ufeff")  # a byte-order mark, as Windows editors write
    if not raw.strip():
        return None
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not JSON ({exc.msg} at column {exc.colno})", line) from None
    return to_sample(obj, where, line=line, require_reply=require_reply)


def iter_lines(path: str | Path, *, require_reply: bool = True, counts: dict[str, int] | None = None) -> Iterator[Sample | DataError]:
    """Every record of a JSONL file in order, streaming: a ``Sample``, or the ``DataError``
    of a bad line (so a checker can list them all). ``counts["blank"]`` counts blank lines."""
    path = Path(path)
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                sample = parse_line(raw, f"{path}:{lineno}", line=lineno, require_reply=require_reply)
            except DataError as exc:
                yield exc
                continue
            if sample is None:
                if counts is not None:
                    counts["blank"] = counts.get("blank", 0) + 1
                continue
            yield sample


def iter_records(path: str | Path, *, on_error: Callable[[DataError], None] | None = None) -> Iterator[Sample]:
    """Yield the records of a JSONL file, streaming.

    Args:
        path: The file.
        on_error: Called with each bad line's error (the line is then skipped); without
            it the first bad line raises.
    """
    for item in iter_lines(path):
        if isinstance(item, DataError):
            if on_error is None:
                raise item
            on_error(item)
            continue
        yield item


class JsonlDataset:
    """Random access to a JSONL file's records without holding them in memory.

    Args:
        path: The file.
        skip_bad_lines: Leave out unusable lines (they are listed in ``self.skipped``)
            instead of raising on the first one.
        lines: Only these 1-based line numbers (e.g. a split); default all.
        require_reply: Refuse records without an assistant turn.
    """

    def __init__(self, path: str | Path, *, skip_bad_lines: bool = False, lines: list[int] | None = None, require_reply: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"dataset {self.path} not found")
        self.name = str(self.path)
        self.base_dir = self.path.resolve().parent
        self.require_reply = require_reply
        self.skipped: list[DataError] = []
        self._offsets = array("q")
        self._lines = array("q")
        wanted = set(lines) if lines is not None else None
        offset = 0
        with self.path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if raw.strip() and (wanted is None or lineno in wanted):
                    try:
                        parse_line(raw, f"{self.path}:{lineno}", line=lineno, require_reply=require_reply)
                    except DataError as exc:
                        if not skip_bad_lines:
                            raise
                        self.skipped.append(exc)
                    else:
                        self._offsets.append(offset)
                        self._lines.append(lineno)
                offset += len(raw)
        self._fh = None

    def __len__(self) -> int:
        return len(self._offsets)

    def sample(self, idx: int) -> Sample:
        """Record ``idx`` (0-based among the usable lines)."""
        if self._fh is None:  # opened lazily so the dataset pickles into dataloader workers
            self._fh = self.path.open("rb")
        self._fh.seek(self._offsets[idx])
        line = self._lines[idx]
        sample = parse_line(self._fh.readline(), f"{self.path}:{line}", line=line, require_reply=self.require_reply)
        assert sample is not None
        return sample

    __getitem__ = sample

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self.sample(i)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fh": None}

    def where(self, idx: int) -> str:
        """``file:line`` of a record, for messages."""
        return f"{self.path}:{self._lines[idx]}"

    @property
    def line_numbers(self) -> array:
        """The 1-based line of each usable record, in order."""
        return self._lines

    def fingerprint(self) -> str:
        """SHA-256 of the file's bytes: what ties predictions to this dataset."""
        return file_sha256(self.path)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    with Path(path).open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


if __name__ == "__main__":
    print(next(iter_records(sys.argv[1])))
