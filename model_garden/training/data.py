"""Training data: JSONL records built into masked examples, checked before training.

``MaskedDataset`` builds an example when the DataLoader asks for it (so image-heavy files
are never held in memory). ``prescan`` builds every example once before training starts:
it finds the lines that cannot be used (unreadable image, reply that cannot be located,
nothing left to train after truncation), gathers the mask statistics printed at start,
and so guarantees training never dies on a bad line hours in.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from model_garden.data.images import ImageError, ImagePolicy, load_image
from model_garden.data.jsonl import DataError
from model_garden.data.schema import schema_for
from model_garden.masking import MaskConfig, MaskingError, build_example, is_processor
from model_garden.masking.inspect import MaskStats
from model_garden.masking.render import normalize

log = logging.getLogger(__name__)


@dataclass
class PrescanReport:
    """What the pre-pass found."""

    stats: MaskStats = field(default_factory=MaskStats)
    errors: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    # SHA-256 over the kept examples' ids, labels, weights and token classes: two runs
    # whose fingerprints match feed the trainer exactly the same thing.
    fingerprint: str = ""


class MaskedDataset(Dataset):
    """Chat records, built by ``build_example`` on access.

    Args:
        records: A ``JsonlDataset``, or any sequence of dicts with ``messages`` (and
            optionally ``where`` naming the example, ``processor_kwargs``), such as
            ``VideoTemporalSFTDataset``.
        processing: Tokenizer or processor.
        cfg: The masking policy.
        max_length: Truncation.
        policy: Where images may come from (default: the dataset's folder).
        schema: Reply schema for ``schema-forced``; without it each record's own (the one
            its prompt carries) is used.
    """

    def __init__(
        self,
        records: Any,
        processing: Any,
        cfg: MaskConfig,
        max_length: int | None = None,
        policy: ImagePolicy | None = None,
        schema: dict | None = None,
    ):
        self.records = records
        self.processing = processing
        self.cfg = cfg
        self.max_length = max_length
        self.policy = policy or ImagePolicy(base_dir=getattr(records, "path", Path.cwd() / "x").parent)
        self.multimodal = is_processor(processing)
        self.indices = list(range(len(records)))
        self.schema = schema

    def __len__(self) -> int:
        return len(self.indices)

    def build(self, record_idx: int) -> dict[str, Any]:
        """Build one record (by its index in ``records``)."""
        record = self.records[record_idx]
        where = self.where(record_idx)
        if isinstance(record, dict):
            messages, kwargs = record["messages"], record.get("processor_kwargs")
            where = record.get("where", where)
        else:
            messages, kwargs = record.messages, None
        images = None
        if self.multimodal:
            conv = normalize(messages, self.cfg, multimodal=True, example=where)
            images = [load_image(ref, where=where, policy=self.policy) for ref in conv.images]
        schema = None
        if self.cfg.strategy == "schema-forced":
            schema = self.schema or schema_for(None, messages)
        return build_example(
            self.processing,
            messages,
            self.cfg,
            images=images,
            max_length=self.max_length,
            example=where,
            processor_kwargs=kwargs,
            schema=schema,
        )

    def where(self, record_idx: int) -> str:
        """How messages name a record."""
        if hasattr(self.records, "where"):
            return self.records.where(record_idx)
        return f"example {record_idx}"

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.build(self.indices[idx])

    def prescan(self, *, skip_bad_lines: bool = False) -> PrescanReport:
        """Build every example once; keep only the usable ones.

        Raises:
            DataError: listing the unusable lines, unless ``skip_bad_lines`` (then they
                are logged and left out).
        """
        report = PrescanReport()
        digest = hashlib.sha256()
        keep = []
        for i in range(len(self.records)):
            try:
                ex = self.build(i)
            except (MaskingError, ImageError, DataError) as exc:
                report.errors.append(str(exc))
                continue
            report.stats.add(ex)
            if all(label == -100 for label in ex["labels"]):
                report.errors.append(f"{self.where(i)}: nothing left to train (cut by --max-length {self.max_length})")
                continue
            report.lengths.append(len(ex["input_ids"]))
            keep.append(i)
            for key in ("input_ids", "labels", "loss_weights", "token_classes"):
                digest.update(repr([float(v) for v in ex[key]]).encode())
        report.fingerprint = digest.hexdigest()
        report.errors = [str(e) for e in getattr(self.records, "skipped", [])] + report.errors
        if report.errors and not skip_bad_lines:
            shown = "\n  ".join(report.errors[:20])
            more = f"\n  ... and {len(report.errors) - 20} more" if len(report.errors) > 20 else ""
            raise DataError(
                f"{getattr(self.records, 'path', 'dataset')}: {len(report.errors)} unusable example(s); fix them or pass --skip-bad-lines:\n  {shown}{more}"
            )
        for error in report.errors:
            log.warning("skipped %s", error)
        self.indices = keep
        self.lengths = report.lengths  # aligned with the kept examples
        return report
