"""Training data: samples built into masked examples when the DataLoader asks for them.

``MaskedDataset`` wraps a ``SampleSource`` (JSONL, a Hugging Face dataset, VTG
annotations) and a ``ChatCodec``; ``prescan`` runs the one scan (``masking.scan``) before
training starts, which finds the records that cannot be used, gathers the mask statistics
printed at start, and so guarantees training never dies on a bad record hours in.
Examples are rebuilt on access, so image-heavy files are never held in memory.

Try it: ``python -m model_garden.training.data FILE.jsonl`` prescans a file with SmolLM2.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from torch.utils.data import Dataset

from model_garden.masking.codec import ChatCodec
from model_garden.masking.scan import ScanReport, scan_source
from model_garden.masking.scan_report import FINGERPRINT_VERSION
from model_garden.masking.strategies import MaskConfig

log = logging.getLogger(__name__)


class MaskedDataset(Dataset):
    """Samples of a source, built by ``codec.encode_train`` on access.

    Args:
        source: A ``SampleSource``: ``len``, ``sample(i)``, ``where(i)``, ``skipped``.
        codec: Tokenizer or processor with its image policy and schema.
        cfg: The masking policy.
        max_length: Truncation.
        num_proc: Processes the prescan runs in (None: the free cores; 1: this one).
        scan_cache: Whether the prescan reuses an earlier one's report (``masking.scan_cache``).
    """

    def __init__(
        self, source: Any, codec: ChatCodec, cfg: MaskConfig, max_length: int | None = None, *, num_proc: int | None = 1, scan_cache: bool = False
    ):
        self.source = source
        self.codec = codec
        self.cfg = cfg
        self.max_length = max_length
        self.num_proc = num_proc
        self.scan_cache = scan_cache
        self.indices = list(range(len(source)))
        self.lengths: list[int] | None = None
        self.report: ScanReport | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.codec.encode_train(self.source.sample(self.indices[idx]), self.cfg, max_length=self.max_length)

    def prescan(self, *, skip_bad_lines: bool = False) -> ScanReport:
        """Build every example once; keep only the usable ones.

        Raises:
            DataError: listing the unusable records, unless ``skip_bad_lines`` (then they
                are logged and left out).
        """
        report = scan_source(self.source, self.codec, self.cfg, self.max_length, num_proc=self.num_proc, cache=self.scan_cache)
        if not skip_bad_lines:
            report.raise_errors()
        for message in report.messages:
            log.warning("skipped %s", message)
        self.indices = list(report.kept)
        # For group_by_length: the lengths the trainer sees, aligned with the kept examples.
        cap = self.max_length or sys.maxsize
        self.lengths = [min(n, cap) for n in report.lengths]
        self.report = report
        return report

    def fingerprint(self, version: int = FINGERPRINT_VERSION) -> str:
        """The fingerprint of the usable examples in ``version`` (``masking.scan_report``):
        the prescan's (run now if it has not), or, for the older version a run folder
        stored, a scan's in that version."""
        if version == FINGERPRINT_VERSION:
            return (self.report or self.prescan(skip_bad_lines=True)).fingerprint
        return scan_source(self.source, self.codec, self.cfg, self.max_length, num_proc=self.num_proc, fingerprint_version=version).fingerprint


if __name__ == "__main__":
    from model_garden.data.sources import open_source
    from model_garden.models import load_processing

    data = MaskedDataset(open_source(sys.argv[1]), ChatCodec.for_data(load_processing("smollm2-135m"), sys.argv[1]), MaskConfig())
    print(data.prescan(skip_bad_lines=True).stats.as_dict())
