"""``ScanReport``: what a scan of a dataset found (``masking.scan``), in compact arrays, so
the report of a 100k-record file stays small; a parallel scan merges the reports of its
chunks with ``merge``, and the scan cache (``masking.scan_cache``) stores it whole.

Try it: ``python -m model_garden.masking.scan FILE.jsonl`` prints a report's counts and messages.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np

from model_garden.data.sample import DataError
from model_garden.masking.inspect import MaskStats

# How an example enters the fingerprint. Version 2 hashes the arrays' bytes (the length
# first, fixed dtypes); version 1 hashed the repr of their values as floats, a quarter of
# a scan's time. A fingerprint names its version ("v2-<sha256>"; a bare digest is version
# 1), so a run folder written by an older version is checked against its own kind.
FINGERPRINT_VERSION = 2
_FINGERPRINTED = (("input_ids", "<i8"), ("labels", "<i8"), ("loss_weights", "<f8"), ("token_classes", "<i8"))


def example_bytes(ex: dict, version: int = FINGERPRINT_VERSION) -> bytes:
    """What one usable example adds to the fingerprint."""
    if version == 1:
        return b"".join(repr([float(v) for v in ex[key]]).encode() for key, _ in _FINGERPRINTED)
    arrays = [np.asarray(ex[key], dtype=dtype) for key, dtype in _FINGERPRINTED]
    return b"".join([np.int64(len(arrays[0])).tobytes(), *(a.tobytes() for a in arrays)])


def fingerprint_name(sha256_hex: str, version: int = FINGERPRINT_VERSION) -> str:
    """The fingerprint as stored: the digest, named by its version."""
    return sha256_hex if version == 1 else f"v{version}-{sha256_hex}"


def fingerprint_version(fingerprint: str) -> int:
    """The version a stored fingerprint was computed in."""
    head, sep, _ = fingerprint.partition("-")
    return int(head[1:]) if sep else 1


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
            classes (``example_bytes``), named by its version: two runs whose
            fingerprints match feed the trainer the same thing.
        longest_reply: The most tokens after the prompt in one example (the replies and
            their end-of-turn tokens): what a generation budget must cover.
        outside_media: Image and video references by path or URL: files the report
            depends on that the data file does not hold (such a report is not cached).
        from_cache: When the report was loaded from the scan cache, the line that says so.
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
    outside_media: int = 0
    from_cache: str = ""

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

    def merge(self, part: ScanReport) -> None:
        """Add the report of the records that follow (a chunk); the fingerprint is the caller's."""
        self.records += part.records
        self.errors += part.errors
        self.kept += part.kept
        self.stats.merge(part.stats)
        self.lengths += part.lengths
        self.truncated += part.truncated
        self.images += part.images
        self.widths += part.widths
        self.heights += part.heights
        self.longest_reply = max(self.longest_reply, part.longest_reply)
        self.outside_media += part.outside_media

    def raise_errors(self, flag: str = "--skip-bad-lines") -> None:
        """Raise one ``DataError`` listing the unusable records (the first 20)."""
        if not self.errors:
            return
        shown = "\n  ".join(self.messages[:20])
        more = f"\n  ... and {len(self.errors) - 20} more" if len(self.errors) > 20 else ""
        raise DataError(f"{self.name}: {len(self.errors)} unusable record(s); fix them or pass {flag}:\n  {shown}{more}")

