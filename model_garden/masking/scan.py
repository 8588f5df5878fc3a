"""One pass over a dataset that builds every example and checks it: the training prescan,
``validate-data`` and ``inspect-masks`` all use it.

``scan`` reads records in order (bad ones arrive as their ``DataError``) and, for each
one, opens its images under the codec's policy, refuses a reply that is not JSON under a
JSON strategy named by the user (it would be trained whole; ``--mask-strategy auto``
trains it whole on purpose, as response-only loss), builds the example as training
would, and refuses one with no trained token within ``--max-length`` or one whose cut would fall in
image/video tokens. Every problem is kept with the record's line (or row), so a run never
dies hours in on a bad record, and the same message reaches ``train`` and
``validate-data``. The report holds compact arrays (token lengths, image sizes, the
positions of the usable records), so a 100k-line file is checked in bounded memory.

``validate_dataset(path, ...)`` is the streaming form for a file, ``scan_source`` the
form for a ``SampleSource``. Records are scanned in chunks of ``CHUNK`` whose reports are
merged in reading order; with ``num_proc`` other than 1, a scan still running after
``POOL_AFTER_S`` seconds hands its remaining chunks to worker processes (``scan_pool``),
and the report is the one a single process gives, to the last bit. With ``cache`` the
finished report is kept on disk and reused while nothing it depends on changes
(``scan_cache``).

Try it: ``model-garden validate-data FILE.jsonl --base-model smollm2-135m --mask-strategy moderate``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from array import array
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_garden.cores import default_threads
from model_garden.data.images import ImageError, ImagePolicy
from model_garden.data.sample import DataError, Sample
from model_garden.data.sources import stream_records
from model_garden.masking import scan_cache
from model_garden.masking.build import truncate
from model_garden.masking.codec import ChatCodec
from model_garden.masking.json_spans import find_json_document
from model_garden.masking.scan_pool import ordered_map
from model_garden.masking.scan_report import FINGERPRINT_VERSION, ScanReport, example_bytes, fingerprint_name
from model_garden.masking.strategies import MEDIA, PROMPT, MaskConfig, MaskingError

JSON_STRATEGIES = ("conservative", "moderate", "aggressive", "schema-forced")
# Records per task of a parallel scan. A constant, not a share of the records per process:
# the mask statistics' float sum is added chunk by chunk, so the same chunks on any number
# of processes give a bit-identical report.
CHUNK = 64
# Seconds of scanning in this process before worker processes take the rest: about what
# they take to start (scan_pool), so data scanned sooner never waits for them, and a long
# scan loses at most that.
POOL_AFTER_S = 3.0


def _check_json(codec: ChatCodec, sample: Sample, cfg: MaskConfig) -> None:
    conv = codec.conversation(sample, cfg)
    for piece, trained in zip(conv.pieces, conv.trained):
        if trained and find_json_document(piece) is None:
            raise MaskingError(
                f"{sample.where}: reply is not JSON, so --mask-strategy {cfg.strategy} would train all of it "
                f"(--skip-bad-lines leaves such records out): {piece[:60]!r}"
            )


def _outside(ref: Any) -> bool:
    """Whether a media reference names a file or URL (a list: a video's frames)."""
    if isinstance(ref, (list, tuple)):
        return any(_outside(r) for r in ref)
    return isinstance(ref, str) and not ref.startswith("data:")


def _check_one(codec: ChatCodec, sample: Sample, cfg: MaskConfig, max_length: int | None, report: ScanReport) -> dict[str, Any] | None:
    """Check and build one sample; raise on its first problem. ``None`` without a model."""
    media = codec.conversation(sample, cfg, media=True)
    report.outside_media += sum(map(_outside, [*media.images, *media.videos]))
    images = codec.open_images(media.images, sample.where)
    for img in images:
        report.images += 1
        report.widths.append(img.width)
        report.heights.append(img.height)
    if cfg.strategy in JSON_STRATEGIES and cfg.require_json:
        _check_json(codec, sample, cfg)
    if codec.processing is None:
        return None
    ex = codec.encode_train(sample, cfg, images=images if codec.multimodal else None)
    n = len(ex["input_ids"])
    if max_length is not None and n > max_length and (ex["token_classes"][max_length:] == MEDIA).any():
        raise MaskingError(f"{sample.where}: --max-length {max_length} would cut image/video tokens ({n} tokens); raise it")
    cut = truncate(ex, max_length)
    if max(cut["loss_weights"], default=0.0) <= 0:  # max() runs in C; a generator over the weights was 5% of a scan
        after = f" within --max-length {max_length} ({n} tokens)" if len(cut["input_ids"]) < n else ""
        raise MaskingError(f"{sample.where}: no trained token{after}")
    report.lengths.append(n)
    report.truncated += cut["truncated"]
    return cut


@dataclass
class ChunkScanner:
    """Scans chunks of records: what each worker process receives, once.

    Attributes:
        codec: Builds the examples (a codec without a tokenizer only checks records and images).
        cfg: The masking policy training uses.
        max_length: Training's ``--max-length``.
        source: The ``SampleSource`` whose samples chunks name by index (workers then
            read them, in parallel); None when chunks carry their records.
        fingerprint_version: How examples enter the fingerprint (``scan_report``).
    """

    codec: ChatCodec
    cfg: MaskConfig
    max_length: int | None = None
    source: Any = None
    fingerprint_version: int = FINGERPRINT_VERSION

    def __call__(self, chunk: tuple[int, list | range]) -> tuple[ScanReport, bytes]:
        """The report of one chunk, ``(position of its first record, its records or
        source indices)``, and the bytes its usable examples add to the fingerprint."""
        start, records = chunk
        items = map(self.source.sample, records) if isinstance(records, range) else records
        part, hashed = ScanReport(), []
        for position, item in enumerate(items, start):
            part.records += 1
            if isinstance(item, DataError):
                part.errors.append((item.line, str(item)))
                continue
            try:
                ex = _check_one(self.codec, item, self.cfg, self.max_length, part)
            except (MaskingError, ImageError, DataError) as exc:
                part.errors.append((item.line, str(exc)))
                continue
            except ValueError as exc:  # a processor's own complaint (image size, video frames, ...)
                part.errors.append((item.line, f"{item.where}: {exc}"))
                continue
            part.kept.append(position)
            if ex is not None:
                part.stats.add(ex)
                classes = np.asarray(ex["token_classes"])
                part.longest_reply = max(part.longest_reply, int(((classes != PROMPT) & (classes != MEDIA)).sum()))
                hashed.append(example_bytes(ex, self.fingerprint_version))
        return part, b"".join(hashed)


def _chunks(items: Iterable[Sample | DataError]) -> Iterator[tuple[int, list]]:
    """``items`` in chunks of ``CHUNK``, each with the position of its first record."""
    it, start = iter(items), 0
    while chunk := list(islice(it, CHUNK)):
        yield start, chunk
        start += len(chunk)


def _scan_chunks(scanner: ChunkScanner, chunks: Iterator[tuple[int, Any]], name: str, num_proc: int | None) -> ScanReport:
    """Scan the chunks, in this process for the first ``POOL_AFTER_S`` seconds and then,
    unless ``num_proc`` is 1, in worker processes (None: the free cores); merge the
    chunks' reports in order."""
    report, digest = ScanReport(name=name), hashlib.sha256()

    def add(parts: Iterable[tuple[ScanReport, bytes]]) -> None:
        for part, hashed in parts:
            report.merge(part)
            digest.update(hashed)

    chunks, start = iter(chunks), time.perf_counter()
    for chunk in chunks:
        add([scanner(chunk)])
        if num_proc != 1 and time.perf_counter() - start > POOL_AFTER_S:
            # The workers take every chunk this loop has not, so the loop then ends.
            processes = num_proc or default_threads()
            add(map(scanner, chunks) if processes == 1 else ordered_map(scanner, chunks, processes))
    report.fingerprint = fingerprint_name(digest.hexdigest(), scanner.fingerprint_version)
    return report


def scan(
    items: Iterable[Sample | DataError], codec: ChatCodec, cfg: MaskConfig, max_length: int | None = None, *, name: str = "dataset", num_proc: int | None = 1
) -> ScanReport:
    """Check and build every record (see the module docstring).

    Args:
        items: The records in order; an unusable one as its ``DataError``.
        codec: Builds the examples (a codec without a tokenizer only checks records and images).
        cfg: The masking policy training uses.
        max_length: Training's ``--max-length``.
        name: How the report names the dataset.
        num_proc: Processes to scan in (None: the cores other processes leave free; 1:
            this process only). The records are read here and sent to them.
    """
    return _scan_chunks(ChunkScanner(codec, cfg, max_length), _chunks(items), name, num_proc)


def scan_source(
    source: Any,
    codec: ChatCodec,
    cfg: MaskConfig,
    max_length: int | None = None,
    *,
    limit: int | None = None,
    num_proc: int | None = 1,
    cache: bool = False,
    fingerprint_version: int = FINGERPRINT_VERSION,
) -> ScanReport:
    """``scan`` over a ``SampleSource`` (its first ``limit`` samples): the records it
    already refused come first. Worker processes read the samples themselves (a chunk is
    a range of indices), so reading, decoding and building all run in parallel.
    ``cache``: reuse the report of an earlier scan of the same data (``scan_cache``);
    ``fingerprint_version``: an older one only to check a run folder that stored it."""
    skipped = list(source.skipped)
    n = len(source) if limit is None else min(limit, len(source))

    def run() -> ScanReport:
        ranges = ((len(skipped) + i, range(i, min(i + CHUNK, n))) for i in range(0, n, CHUNK))
        chunks = chain([(0, skipped)] if skipped else [], ranges)
        scanner = ChunkScanner(codec, cfg, max_length, source, fingerprint_version)
        report = _scan_chunks(scanner, chunks, getattr(source, "name", "dataset"), num_proc)
        report.kept = array("I", (p - len(skipped) for p in report.kept))  # positions in the source
        return report

    key = scan_cache.source_key(source, limit, codec, cfg, max_length) if cache and fingerprint_version == FINGERPRINT_VERSION else None
    return scan_cache.cached(key, run)


def validate_dataset(
    path: str | Path,
    processing: Any = None,
    cfg: MaskConfig | None = None,
    max_length: int | None = None,
    policy: ImagePolicy | None = None,
    *,
    num_proc: int | None = 1,
    cache: bool = False,
    **source_options: Any,
) -> ScanReport:
    """Check every record of a dataset, streaming (JSONL line by line).

    Args:
        path: A dataset ``open_source`` reads.
        processing: A tokenizer or processor; with it each example is also built as
            training would build it, and token lengths are collected.
        cfg: The masking policy training will use (a JSON strategy requires JSON replies).
        max_length: Training's ``--max-length``.
        policy: Where images may come from; relative paths resolve against the dataset's
            folder unless the policy names another.
        num_proc: Processes to scan in (see ``scan``).
        cache: Reuse the report of an earlier scan of the same file (``scan_cache``).
        source_options: ``format``, ``name``, ``split`` for ``open_source``.

    Returns:
        The report; ``report.ok`` is False when any record is bad.
    """
    path = Path(path)
    codec = ChatCodec.for_data(processing, path)
    if policy is not None:
        codec.policy = dataclasses.replace(policy, base_dir=policy.base_dir or codec.policy.base_dir)
    cfg = cfg or MaskConfig()

    def run() -> ScanReport:
        counts: dict[str, int] = {}
        report = scan(stream_records(path, counts=counts, **source_options), codec, cfg, max_length, name=str(path), num_proc=num_proc)
        report.blank = counts.get("blank", 0)
        return report

    key = scan_cache.file_key(path, source_options.get("format", "auto"), codec, cfg, max_length) if cache else None
    return scan_cache.cached(key, run)


if __name__ == "__main__":
    rep = validate_dataset(sys.argv[1])
    print(rep.counts, *rep.messages, sep="\n")
