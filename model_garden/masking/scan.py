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

``validate_dataset(path, ...)`` is the streaming form for a file.

Try it: ``model-garden validate-data FILE.jsonl --base-model smollm2-135m --mask-strategy moderate``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from array import array
from collections.abc import Iterable
from itertools import chain
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_garden.data.images import ImageError, ImagePolicy
from model_garden.data.sample import DataError, Sample
from model_garden.data.sources import stream_records
from model_garden.masking.build import truncate
from model_garden.masking.codec import ChatCodec
from model_garden.masking.inspect import MaskStats
from model_garden.masking.json_spans import find_json_document
from model_garden.masking.strategies import MEDIA, PROMPT, MaskConfig, MaskingError

JSON_STRATEGIES = ("conservative", "moderate", "aggressive", "schema-forced")


@dataclass
class ScanReport:
    """What ``scan`` found.

    Attributes:
        name: The dataset.
        records: Records read (usable or not; blank lines are not records).
        blank: Blank lines (ignored, not errors).
        errors: ``(line, message)`` for every unusable record, in order; ``message``
            starts with the record's ``file:line`` (``line`` is None when unknown).
        kept: Positions (0-based, in reading order) of the usable records.
        stats: Mask statistics of the usable examples (as truncated for training).
        lengths: Token length of each usable example before truncation.
        truncated: Usable examples longer than ``max_length``.
        images: Images opened.
        widths: Width of each image opened.
        heights: Height of each image opened.
        fingerprint: SHA-256 over the usable examples' ids, labels, weights and token
            classes: two runs whose fingerprints match feed the trainer the same thing.
        longest_reply: The most tokens after the prompt in one example (the replies and
            their end-of-turn tokens): what a generation budget must cover.
    """

    name: str = "dataset"
    records: int = 0
    blank: int = 0
    errors: list[tuple[int | None, str]] = field(default_factory=list)
    kept: array = field(default_factory=lambda: array("I"))
    stats: MaskStats = field(default_factory=MaskStats)
    lengths: array = field(default_factory=lambda: array("I"))
    truncated: int = 0
    images: int = 0
    widths: array = field(default_factory=lambda: array("I"))
    heights: array = field(default_factory=lambda: array("I"))
    fingerprint: str = ""
    longest_reply: int = 0

    @property
    def ok(self) -> bool:
        """No unusable record."""
        return not self.errors

    @property
    def messages(self) -> list[str]:
        """The error messages, in order."""
        return [message for _, message in self.errors]

    @property
    def counts(self) -> dict[str, int]:
        """The headline numbers, for display."""
        return {
            "records": self.records,
            "valid": self.records - len(self.errors),
            "bad": len(self.errors),
            "blank lines": self.blank,
            "images": self.images,
            "truncated": self.truncated,
        }

    def image_sizes(self) -> dict[str, tuple[int, int]]:
        """The smallest, median and largest image by area, as ``(width, height)``."""
        if not self.widths:
            return {}
        w, h = np.asarray(self.widths, dtype=np.int64), np.asarray(self.heights, dtype=np.int64)
        order = np.argsort(w * h, kind="stable")
        pick = {"min": order[0], "median": order[len(order) // 2], "max": order[-1]}
        return {name: (int(w[i]), int(h[i])) for name, i in pick.items()}

    def raise_errors(self, flag: str = "--skip-bad-lines") -> None:
        """Raise one ``DataError`` listing the unusable records (the first 20)."""
        if not self.errors:
            return
        shown = "\n  ".join(self.messages[:20])
        more = f"\n  ... and {len(self.errors) - 20} more" if len(self.errors) > 20 else ""
        raise DataError(f"{self.name}: {len(self.errors)} unusable record(s); fix them or pass {flag}:\n  {shown}{more}")


def _check_json(codec: ChatCodec, sample: Sample, cfg: MaskConfig) -> None:
    conv = codec.conversation(sample, cfg)
    for piece, trained in zip(conv.pieces, conv.trained):
        if trained and find_json_document(piece) is None:
            raise MaskingError(
                f"{sample.where}: reply is not JSON, so --mask-strategy {cfg.strategy} would train all of it "
                f"(--skip-bad-lines leaves such records out): {piece[:60]!r}"
            )


def _check_one(codec: ChatCodec, sample: Sample, cfg: MaskConfig, max_length: int | None, report: ScanReport) -> dict[str, Any] | None:
    """Check and build one sample; raise on its first problem. ``None`` without a model."""
    media = codec.conversation(sample, cfg, media=True)
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
    if not any(w > 0 for w in cut["loss_weights"]):
        after = f" within --max-length {max_length} ({n} tokens)" if len(cut["input_ids"]) < n else ""
        raise MaskingError(f"{sample.where}: no trained token{after}")
    report.lengths.append(n)
    report.truncated += cut["truncated"]
    return cut


def scan(items: Iterable[Sample | DataError], codec: ChatCodec, cfg: MaskConfig, max_length: int | None = None, *, name: str = "dataset") -> ScanReport:
    """Check and build every record (see the module docstring).

    Args:
        items: The records in order; an unusable one as its ``DataError``.
        codec: Builds the examples (a codec without a tokenizer only checks records and images).
        cfg: The masking policy training uses.
        max_length: Training's ``--max-length``.
        name: How the report names the dataset.
    """
    report = ScanReport(name=name)
    digest = hashlib.sha256()
    for position, item in enumerate(items):
        report.records += 1
        if isinstance(item, DataError):
            report.errors.append((item.line, str(item)))
            continue
        try:
            ex = _check_one(codec, item, cfg, max_length, report)
        except (MaskingError, ImageError, DataError) as exc:
            report.errors.append((item.line, str(exc)))
            continue
        except ValueError as exc:  # a processor's own complaint (image size, video frames, ...)
            report.errors.append((item.line, f"{item.where}: {exc}"))
            continue
        report.kept.append(position)
        if ex is not None:
            report.stats.add(ex)
            classes = np.asarray(ex["token_classes"])
            report.longest_reply = max(report.longest_reply, int(((classes != PROMPT) & (classes != MEDIA)).sum()))
            for key in ("input_ids", "labels", "loss_weights", "token_classes"):
                digest.update(repr([float(v) for v in ex[key]]).encode())
    report.fingerprint = digest.hexdigest()
    return report


def scan_source(source: Any, codec: ChatCodec, cfg: MaskConfig, max_length: int | None = None) -> ScanReport:
    """``scan`` over a ``SampleSource``: the records it already refused come first."""
    items = chain(source.skipped, (source.sample(i) for i in range(len(source))))
    report = scan(items, codec, cfg, max_length, name=getattr(source, "name", "dataset"))
    skipped = len(source.skipped)
    report.kept = array("I", (p - skipped for p in report.kept))  # positions in the source
    return report


def validate_dataset(
    path: str | Path,
    processing: Any = None,
    cfg: MaskConfig | None = None,
    max_length: int | None = None,
    policy: ImagePolicy | None = None,
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
        source_options: ``format``, ``name``, ``split`` for ``open_source``.

    Returns:
        The report; ``report.ok`` is False when any record is bad.
    """
    path = Path(path)
    codec = ChatCodec.for_data(processing, path)
    if policy is not None:
        codec.policy = dataclasses.replace(policy, base_dir=policy.base_dir or codec.policy.base_dir)
    counts: dict[str, int] = {}
    report = scan(stream_records(path, counts=counts, **source_options), codec, cfg or MaskConfig(), max_length, name=str(path))
    report.blank = counts.get("blank", 0)
    return report


if __name__ == "__main__":
    rep = validate_dataset(sys.argv[1])
    print(rep.counts, *rep.messages, sep="\n")
