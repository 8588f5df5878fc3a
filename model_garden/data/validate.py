"""Check a chat JSONL file before training on it, line by line, streaming.

``validate_dataset`` reads one line at a time and reports every bad line with its line
number and the reason: not UTF-8 or not JSON, no assistant turn, unknown role, unreadable
or refused image, reply not JSON when a JSON strategy is asked, and (given a tokenizer or
processor) an example the template or processor rejects or that has no trained token
within ``max_length``. It also gathers token lengths (before truncation, to choose
``--max-length``) and image sizes in compact arrays, so a 100k-line file with inline
images is checked in bounded memory. Training reuses it to refuse a dataset with errors.

Try it: ``model-garden validate-data FILE.jsonl --base-model smollm2-135m``.
"""

from __future__ import annotations

import dataclasses
import sys
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_garden.data.images import ImagePolicy, load_image
from model_garden.data.jsonl import parse_line
from model_garden.masking.build import build_example, is_processor
from model_garden.masking.json_spans import find_json_document
from model_garden.masking.render import normalize
from model_garden.masking.strategies import MEDIA, MaskConfig, MaskingError

JSON_STRATEGIES = ("conservative", "moderate", "aggressive")


@dataclass
class ValidationReport:
    """What ``validate_dataset`` found.

    Attributes:
        path: The file.
        lines: Non-blank lines read.
        blank: Blank lines (ignored, not errors).
        errors: ``(line, reason)`` for every bad line, in file order.
        images: Images opened.
        truncated: Good examples longer than ``max_length``.
        lengths: Token length of each good example before truncation (empty without a
            tokenizer).
        widths: Width of each image opened.
        heights: Height of each image opened.
    """

    path: Path
    lines: int = 0
    blank: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    images: int = 0
    truncated: int = 0
    lengths: array = field(default_factory=lambda: array("I"))
    widths: array = field(default_factory=lambda: array("I"))
    heights: array = field(default_factory=lambda: array("I"))

    @property
    def ok(self) -> bool:
        """No bad line."""
        return not self.errors

    @property
    def bad_lines(self) -> set[int]:
        """Line numbers of the bad lines (to skip them with ``--skip-bad-lines``)."""
        return {line for line, _ in self.errors}

    @property
    def counts(self) -> dict[str, int]:
        """The headline numbers, for display."""
        return {
            "lines": self.lines,
            "valid": self.lines - len(self.bad_lines),
            "bad": len(self.bad_lines),
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


def _reason(exc: Exception, where: str) -> str:
    """The error message without the ``file:line`` prefix the report already gives."""
    msg = str(exc)
    return msg[len(where) :].lstrip(":, ") if msg.startswith(where) else msg


def _check(
    record_messages: list[dict[str, Any]],
    where: str,
    report: ValidationReport,
    processing: Any,
    cfg: MaskConfig,
    max_length: int | None,
    policy: ImagePolicy,
) -> None:
    """Check one parsed example; raise on the first problem."""
    conv = normalize(record_messages, cfg, multimodal=True, example=where)
    images = []
    for k, ref in enumerate(conv.images):
        img = load_image(ref, where=f"{where}, image {k}", policy=policy)
        report.images += 1
        report.widths.append(img.width)
        report.heights.append(img.height)
        images.append(img)
    if cfg.strategy in JSON_STRATEGIES:
        for piece, trained in zip(conv.pieces, conv.trained):
            if trained and find_json_document(piece) is None:
                raise MaskingError(f"{where}: reply is not JSON, so --strategy {cfg.strategy} would train all of it: {piece[:60]!r}")
    if processing is None:
        return
    ex = build_example(processing, record_messages, cfg, images=images if is_processor(processing) else None, example=where)
    n = len(ex["input_ids"])
    cut = n if max_length is None else min(n, max_length)
    if max_length is not None and n > max_length and (ex["token_classes"][max_length:] == MEDIA).any():
        raise MaskingError(f"{where}: --max-length {max_length} would cut image/video tokens ({n} tokens); raise it")
    if not any(w > 0 for w in ex["loss_weights"][:cut]):
        after = f" within --max-length {max_length} ({n} tokens)" if cut < n else ""
        raise MaskingError(f"{where}: no trained token{after}")
    report.lengths.append(n)
    report.truncated += cut < n


def validate_dataset(
    path: str | Path,
    processing: Any = None,
    cfg: MaskConfig | None = None,
    max_length: int | None = None,
    policy: ImagePolicy | None = None,
) -> ValidationReport:
    """Check every line of a chat JSONL file, streaming.

    Args:
        path: The file.
        processing: A tokenizer or processor; with it each example is also built as
            training would build it, and token lengths are collected.
        cfg: The masking policy training will use (a JSON strategy requires JSON replies).
        max_length: Training's ``--max-length``: an example with no trained token
            within it is an error, a longer one counts as truncated.
        policy: Where images may come from; relative paths resolve against the file's
            folder unless the policy names another.

    Returns:
        The report; ``report.ok`` is False when any line is bad.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset {path} not found")
    cfg = cfg or MaskConfig()
    policy = policy or ImagePolicy()
    if policy.base_dir is None:
        policy = dataclasses.replace(policy, base_dir=path.resolve().parent)
    report = ValidationReport(path=path)
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                report.blank += 1
                continue
            report.lines += 1
            where = f"{path}:{lineno}"
            try:
                record = parse_line(raw, where)
                if record is not None:
                    _check(record.messages, where, report, processing, cfg, max_length, policy)
            except ValueError as exc:  # DataError, MaskingError, ImageError, and processors' own complaints
                report.errors.append((lineno, _reason(exc, where)))
    return report


if __name__ == "__main__":
    rep = validate_dataset(sys.argv[1])
    print(rep.counts, *(f"line {n}: {r}" for n, r in rep.errors), sep="\n")
