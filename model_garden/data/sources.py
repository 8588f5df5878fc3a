"""Open a dataset of any supported kind as a sequence of ``Sample``s.

``open_source(spec)`` chooses the reader from what ``spec`` is (or from ``--data-format``):

* a ``.jsonl`` file: ``JsonlDataset`` (streaming, line numbers);
* a ``.parquet``, ``.arrow`` or ``.json`` file, or a folder of such files: Hugging Face
  ``datasets`` (Arrow, memory-mapped: rows are read when asked for, never held whole);
* a folder written by ``Dataset.save_to_disk`` (``DatasetDict`` folders take ``--data-split``);
* anything else: a hub dataset id with ``--data-name`` and ``--data-split``, when a
  network is reachable.

Every row goes through ``data.sample.to_sample``, so the record layouts (OpenAI messages,
TRL prompt-completion, ShareGPT) work in every container, and errors name the folder and
row: ``data/train row 12: no assistant message``.

Try it: ``python -m model_garden.data.sources PATH`` prints the first sample.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import datasets

from model_garden.data.jsonl import JsonlDataset, iter_lines
from model_garden.data.sample import DataError, Sample, to_sample

FORMATS = ("auto", "jsonl", "parquet", "arrow", "json", "disk", "hub")
_TABLE_SUFFIXES = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json"}


class SampleSource(Protocol):
    """What training, validation and prediction read: a sized, indexable set of samples."""

    name: str
    base_dir: Path  # relative image paths resolve against it
    skipped: list[DataError]

    def __len__(self) -> int: ...

    def sample(self, idx: int) -> Sample: ...

    def where(self, idx: int) -> str: ...

    def fingerprint(self) -> str: ...


class TableSource:
    """Rows of a Hugging Face ``datasets.Dataset`` as samples.

    Args:
        table: The dataset.
        name: How messages name it (its path or hub id).
        base_dir: Folder relative image paths resolve against.
        skip_bad_lines: Leave out unusable rows (listed in ``self.skipped``).
        require_reply: Refuse rows without an assistant turn.
    """

    def __init__(self, table: datasets.Dataset, name: str, base_dir: Path, *, skip_bad_lines: bool = False, require_reply: bool = True):
        self.table, self.name, self.base_dir = table, name, base_dir
        self.require_reply = require_reply
        self.skipped: list[DataError] = []
        self._rows: list[int] = []
        for i, row in enumerate(table):  # checked once up front, as JSONL lines are
            try:
                self._convert(row, i)
            except DataError as exc:
                if not skip_bad_lines:
                    raise
                self.skipped.append(exc)
            else:
                self._rows.append(i)

    def _convert(self, row: dict[str, Any], i: int) -> Sample:
        return to_sample(row, f"{self.name} row {i + 1}", line=i + 1, require_reply=self.require_reply)

    def __len__(self) -> int:
        return len(self._rows)

    def sample(self, idx: int) -> Sample:
        """Row ``idx`` among the usable ones."""
        i = self._rows[idx]
        return self._convert(self.table[i], i)

    __getitem__ = sample

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self.sample(i)

    def where(self, idx: int) -> str:
        return f"{self.name} row {self._rows[idx] + 1}"

    def fingerprint(self) -> str:
        """``datasets``' own fingerprint of the table (a hash of its files and transforms)."""
        return self.table._fingerprint


class SampleView:
    """The first ``n`` samples of a source as a sequence read on access (slices too), so a
    loop over a large dataset never holds it whole."""

    def __init__(self, source: SampleSource, n: int | None = None):
        self.source = source
        self.n = len(source) if n is None else min(n, len(source))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: int | slice) -> Any:
        if isinstance(idx, slice):
            return [self.source.sample(i) for i in range(*idx.indices(self.n))]
        if not -self.n <= idx < self.n:
            raise IndexError(idx)
        return self.source.sample(idx % self.n)

    def __iter__(self) -> Iterator[Sample]:
        return (self.source.sample(i) for i in range(self.n))


def _table_files(path: Path) -> tuple[str, list[str]]:
    """The ``datasets`` builder and data files of a file or a folder of files."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in _TABLE_SUFFIXES and p.is_file())
    kinds = {_TABLE_SUFFIXES.get(p.suffix) for p in files}
    if not files or None in kinds:
        raise DataError(f"{path}: no .parquet, .arrow or .json files to read (--data-format)")
    if len(kinds) > 1:
        raise DataError(f"{path}: holds files of several kinds ({', '.join(sorted(kinds))}); keep one kind per folder")
    return kinds.pop(), [str(p) for p in files]


def _load_table(spec: str, fmt: str, name: str | None, split: str) -> tuple[datasets.Dataset, Path]:
    path = Path(spec).expanduser()
    is_saved = path.is_dir() and any((path / f).is_file() for f in ("state.json", "dataset_dict.json"))
    if fmt == "disk" or (fmt == "auto" and is_saved):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"{path}: no split {split!r} (--data-split; it has {', '.join(loaded)})")
            loaded = loaded[split]
        return loaded, path.resolve()
    if fmt in ("parquet", "arrow", "json") or (fmt == "auto" and path.exists()):
        builder, files = _table_files(path)
        if fmt != "auto" and builder != fmt:
            raise DataError(f"{path}: --data-format {fmt} but the files are {builder}")
        table = datasets.load_dataset(builder, data_files=files, split="train")
        return table, (path if path.is_dir() else path.parent).resolve()
    try:
        return datasets.load_dataset(spec, name, split=split), Path.cwd()
    except Exception as exc:  # the hub client raises many kinds; all mean "could not get it"
        raise DataError(f"{spec}: not a local file or folder, and not loadable as a hub dataset ({type(exc).__name__}: {exc})") from None


def open_source(
    spec: str | Path,
    *,
    format: str = "auto",
    name: str | None = None,
    split: str = "train",
    skip_bad_lines: bool = False,
    require_reply: bool = True,
) -> JsonlDataset | TableSource:
    """Open a dataset (see the module docstring).

    Args:
        spec: A file, a folder, or a hub id.
        format: One of ``FORMATS`` (``--data-format``); ``auto`` decides from ``spec``.
        name: Hub dataset configuration (``--data-name``).
        split: Split of a hub dataset or a saved ``DatasetDict`` (``--data-split``).
        skip_bad_lines: Leave out unusable records (``--skip-bad-lines``) instead of raising.
        require_reply: Refuse records without an assistant turn.

    Raises:
        FileNotFoundError: a local path that does not exist.
        DataError: an unreadable dataset or record, naming it.
    """
    if format not in FORMATS:
        raise DataError(f"--data-format must be one of {', '.join(FORMATS)}; got {format!r}")
    spec = str(spec)
    path = Path(spec).expanduser()
    if is_jsonl(path, format):
        return JsonlDataset(path, skip_bad_lines=skip_bad_lines, require_reply=require_reply)
    if format != "hub" and not path.exists() and (format != "auto" or spec.startswith((".", "/", "~")) or path.suffix):
        raise FileNotFoundError(f"dataset {spec} not found")
    table, base_dir = _load_table(spec, format, name, split)
    return TableSource(table, spec, base_dir, skip_bad_lines=skip_bad_lines, require_reply=require_reply)


def stream_records(spec: str | Path, *, format: str = "auto", counts: dict[str, int] | None = None, **kwargs: Any) -> Iterator[Sample | DataError]:
    """Every record in order, each a ``Sample`` or the ``DataError`` that makes it
    unusable; JSONL files are streamed line by line (``counts["blank"]`` counts blanks)."""
    path = Path(spec).expanduser()
    if is_jsonl(path, format):
        if not path.is_file():
            raise FileNotFoundError(f"dataset {path} not found")
        yield from iter_lines(path, require_reply=kwargs.get("require_reply", True), counts=counts)
        return
    source = open_source(spec, format=format, skip_bad_lines=True, **kwargs)
    yield from source.skipped
    yield from source


def is_jsonl(path: Path, format: str = "auto") -> bool:
    """Whether ``path`` is read as a JSONL file (line by line) under ``--data-format``."""
    return format == "jsonl" or (format == "auto" and path.suffix == ".jsonl" and not path.is_dir())


def base_dir_of(spec: str | Path | None) -> Path:
    """The folder relative image paths of a dataset resolve against."""
    if spec is None:
        return Path.cwd()
    path = Path(spec).expanduser()
    return (path if path.is_dir() else path.parent).resolve()


if __name__ == "__main__":
    print(open_source(sys.argv[1]).sample(0))
