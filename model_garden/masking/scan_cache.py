"""The scan's report kept on disk, so a second ``train`` or ``validate-data`` on the same
data loads it instead of building every example again.

An entry is the pickled ``ScanReport`` in ``scan_dir() / KEY.pkl``, where KEY is a
SHA-256 over everything the report depends on:

* the data: the file's bytes (not its modification time), the path its messages name,
  and which of its lines are read;
* the tokenizer or processor: its serialized backend (vocabulary, merges, normalizer,
  special tokens), the chat template it renders with, a processor's image and video
  settings;
* the masking: ``MaskConfig`` (schema and ``require_json`` included), the dataset's reply
  schema, ``--max-length`` and the image policy;
* the code: the source of the whole ``model_garden`` package and the versions of the
  libraries that tokenize and render. This replaces a version number to bump by hand,
  which an edit of the masks could forget.

Scanned every time, never cached:

* sources other than a JSONL file (parquet/arrow/json tables, saved and hub datasets,
  VTG annotations): ``datasets``' fingerprints come from paths and modification times,
  not content, and hashing a hub dataset's content means reading all of it;
* data whose records refer to images or videos by path or URL: those files can change
  while the data file does not (inline ``data:`` images are part of its bytes).

Entries are written to a temporary file and renamed into place, so a crash or a run
beside this one never leaves half an entry. ``MODEL_GARDEN_SCAN_CACHE`` moves the folder
(default ``$MODEL_GARDEN_CACHE/scans``, i.e. ``~/.cache/model-garden/scans``); deleting
it is always safe. ``--no-scan-cache`` turns the cache off.

Try it: ``python -m model_garden.masking.scan_cache`` prints the folder.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import pickle
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_garden.data.jsonl import JsonlDataset, file_sha256
from model_garden.data.sources import is_jsonl
from model_garden.models import cache_dir

if TYPE_CHECKING:
    from model_garden.masking.codec import ChatCodec
    from model_garden.masking.scan_report import ScanReport
    from model_garden.masking.strategies import MaskConfig

log = logging.getLogger(__name__)

ENV = "MODEL_GARDEN_SCAN_CACHE"
# The libraries whose upgrade can change a tokenization, a rendered template or an image.
LIBRARIES = ("transformers", "tokenizers", "jinja2", "pillow")


def scan_dir() -> Path:
    """The folder of the cached reports."""
    return Path(os.environ.get(ENV) or cache_dir() / "scans")


@functools.cache
def code_version() -> str:
    """A digest of the package's source and of the versions of ``LIBRARIES``."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    for library in LIBRARIES:
        digest.update(f"{library} {metadata.version(library)}".encode())
    return digest.hexdigest()


def _processing(codec: ChatCodec) -> list[str]:
    processing, tok = codec.processing, codec.tokenizer
    if processing is None:
        return ["no model"]
    parts = [type(processing).__name__, tok.backend_tokenizer.to_str(), tok.chat_template or "", json.dumps(tok.special_tokens_map, sort_keys=True, default=str)]
    if codec.multimodal:  # a processor renders with its own template
        parts += [processing.to_json_string(), processing.chat_template or ""]
    return parts


def _masking(codec: ChatCodec, cfg: MaskConfig, max_length: int | None) -> list[str]:
    settings = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.init}
    return [json.dumps(settings, sort_keys=True, default=str), json.dumps(codec.dataset_schema, sort_keys=True), repr(codec.policy), str(max_length)]


def _key(data: list[str], codec: ChatCodec, cfg: MaskConfig, max_length: int | None) -> str:
    digest = hashlib.sha256()
    for part in [code_version(), *data, *_processing(codec), *_masking(codec, cfg, max_length)]:
        digest.update(hashlib.sha256(part.encode()).digest())  # fixed-size pieces: no two lists of parts run together
    return digest.hexdigest()


def file_key(path: Path, format: str, codec: ChatCodec, cfg: MaskConfig, max_length: int | None) -> str | None:
    """The key of ``validate_dataset``'s scan of a file; None unless it is a JSONL file."""
    if not (is_jsonl(path, format) and path.is_file()):
        return None
    return _key(["stream", str(path), file_sha256(path)], codec, cfg, max_length)


def source_key(source: Any, limit: int | None, codec: ChatCodec, cfg: MaskConfig, max_length: int | None) -> str | None:
    """The key of ``scan_source``'s scan of a source; None unless it is a JSONL file."""
    if not isinstance(source, JsonlDataset):
        return None
    lines = hashlib.sha256(source.line_numbers.tobytes()).hexdigest()
    return _key(["source", source.name, source.fingerprint(), str(source.require_reply), lines, str(limit)], codec, cfg, max_length)


def cached(key: str | None, scan: Callable[[], ScanReport]) -> ScanReport:
    """The report stored under ``key``; else ``scan()``'s, then stored (``key`` None: no cache)."""
    if key is None:
        return scan()
    path = scan_dir() / f"{key}.pkl"
    found = _load(path)
    if found is not None:
        return found
    report = scan()
    if report.outside_media:
        log.info("%s: scan not cached: %d image/video reference(s) name files that may change", report.name, report.outside_media)
    else:
        _store(path, report)
    return report


def _load(path: Path) -> ScanReport | None:
    try:
        report = pickle.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        log.warning("scan cache entry %s is unreadable (%s); scanning again", path, exc)
        return None
    report.from_cache = f"{report.name}: scan loaded from the cache {path} (--no-scan-cache scans again)"
    log.info(report.from_cache)
    return report


def _store(path: Path, report: ScanReport) -> None:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(report, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError as exc:  # the cache only saves time: a full or read-only disk must not stop the run
        log.warning("scan cache entry %s not written (%s)", path, exc)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


if __name__ == "__main__":
    print(scan_dir())
