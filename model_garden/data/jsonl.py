"""Stream OpenAI chat fine-tuning JSONL: one ``{"messages": [...]}`` object per line.

Files are never loaded whole: ``iter_records`` streams, and ``JsonlDataset`` keeps only
the byte offset of each line and parses a line when it is asked for, so a 100k-line file
with inline base64 images costs a few hundred kilobytes of memory. Every problem names
the file and line.

Try it: ``python -m model_garden.data.jsonl FILE.jsonl`` prints the first record.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


class DataError(ValueError):
    """A dataset line is unusable; the message names the file and line."""


@dataclass
class Record:
    """One chat example.

    Attributes:
        line: 1-based line number in the file.
        messages: The OpenAI chat messages.
        meta: Every other key of the line (``id``, ``schema``, ...).
    """

    line: int
    messages: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def reply(self) -> str:
        """The text of the last assistant message."""
        for msg in reversed(self.messages):
            if msg.get("role") == "assistant":
                content = msg.get("content")
                if isinstance(content, list):
                    return "".join(p.get("text", "") for p in content if isinstance(p, dict))
                return content or ""
        return ""


def parse_line(raw: str | bytes, where: str) -> Record | None:
    """Parse and check one line; ``None`` for a blank line.

    Raises:
        DataError: naming ``where`` and the reason.
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not raw.strip():
        return None
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list) or not obj["messages"]:
        raise DataError(f"{where}: expected an object with a non-empty 'messages' list")
    messages = obj.pop("messages")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ROLES:
            role = msg.get("role") if isinstance(msg, dict) else type(msg).__name__
            raise DataError(f"{where}: message {i} has unknown role {role!r} (expected {', '.join(ROLES)})")
        content = msg.get("content")
        if not isinstance(content, (str, list)) and not (content is None and msg["role"] != "assistant"):
            raise DataError(f"{where}: message {i} content must be a string or a list of parts")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: no assistant message")
    return Record(line=0, messages=messages, meta=obj)


def iter_records(
    path: str | Path,
    *,
    on_error: Callable[[DataError], None] | None = None,
) -> Iterator[Record]:
    """Yield the records of a JSONL file, streaming.

    Args:
        path: The file.
        on_error: Called with each bad line's error (the line is then skipped); without
            it the first bad line raises.
    """
    path = Path(path)
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                record = parse_line(raw, f"{path}:{lineno}")
            except DataError as exc:
                if on_error is None:
                    raise
                on_error(exc)
                continue
            if record is not None:
                record.line = lineno
                yield record


class JsonlDataset:
    """Random access to a JSONL file's records without holding them in memory.

    Args:
        path: The file.
        skip_bad_lines: Leave out unusable lines (they are listed in ``self.skipped``)
            instead of raising on the first one.
        lines: Only these 1-based line numbers (e.g. a split); default all.
    """

    def __init__(self, path: str | Path, *, skip_bad_lines: bool = False, lines: list[int] | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"dataset {self.path} not found")
        self.skipped: list[DataError] = []
        self._offsets: list[int] = []
        self._lines: list[int] = []
        wanted = set(lines) if lines is not None else None
        offset = 0
        with self.path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if raw.strip() and (wanted is None or lineno in wanted):
                    try:
                        parse_line(raw, f"{self.path}:{lineno}")
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

    def __getitem__(self, idx: int) -> Record:
        if self._fh is None:  # opened lazily so the dataset pickles into dataloader workers
            self._fh = self.path.open("rb")
        self._fh.seek(self._offsets[idx])
        record = parse_line(self._fh.readline(), f"{self.path}:{self._lines[idx]}")
        assert record is not None
        record.line = self._lines[idx]
        return record

    def __iter__(self) -> Iterator[Record]:
        for i in range(len(self)):
            yield self[i]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fh": None}

    def where(self, idx: int) -> str:
        """``file:line`` of a record, for messages."""
        return f"{self.path}:{self._lines[idx]}"


if __name__ == "__main__":
    print(next(iter_records(sys.argv[1])))
