"""Score temporal grounding answers the way the field reports them.

``parse_span`` reads a span out of a model's answer; ``grounding_metrics`` gives, over a
test set, R1@0.3 / R1@0.5 / R1@0.7 (percent of queries whose top-1 span has IoU at or
above the threshold with the gold span) and mIoU (mean IoU, percent), as in the
Charades-STA and ActivityNet Captions papers and lmms-eval. An answer that does not
parse scores IoU 0 and stays in the denominator, so a model cannot gain by refusing.

IoU of spans ``a`` and ``b`` is ``|a ∩ b| / |a ∪ b|`` on the time line; an empty span
(start == end) covers no time, so its IoU with anything is 0.

Try it: ``python -m model_garden.vtg.metrics "The event happens in 24.3 - 30.4 seconds."``
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

from model_garden.vtg.temporal_tokens import bins_to_seconds

Span = tuple[float, float]
THRESHOLDS = (0.3, 0.5, 0.7)
# Times like 2.1 + 7.0 are not exact in binary; an IoU this close to a threshold reaches it.
_EPS = 1e-9

# <|box_start|><12><40><|box_end|>; the box tokens are optional because decoding with
# skip_special_tokens=True removes them.
_TOKENS_RE = re.compile(r"(?:<\|box_start\|>\s*)?<(\d+)>\s*<(\d+)>")
# A time is hh:mm:ss, mm:ss (either with a fraction) or plain seconds.
_TIME = r"(?:\d+:)?\d{1,2}:\d{2}(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"
_UNIT = r"(?:\s*(?:seconds?|secs?|s)\b)?"
_SEP = r"\s*(?:-|–|—|~|,|;|\bto\b|\band\b|\buntil\b|\btill\b|\bthrough\b)\s*"
# The earliest "<time> <separator> <time>": [12.3, 20.0] / 12.3 - 20.0 seconds /
# from 12.3 to 20 / 00:12 - 00:20 / 12.3s to 20s / between 5 and 9.
_PAIR_RE = re.compile(rf"(?<![\d.:])({_TIME}){_UNIT}{_SEP}({_TIME}){_UNIT}(?![\d:])")


def _seconds(text: str) -> float:
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def parse_span(text: str, duration: float | None = None, num_bins: int | None = None) -> Span | None:
    """Read a ``(start, end)`` span in seconds from a model's answer.

    Temporal tokens (``<|box_start|><12><40><|box_end|>``) are read first and turned into
    seconds at their bins' centres; otherwise the first pair of times is taken, in any of
    the forms ``[12.3, 20.0]``, ``12.3 - 20.0 seconds``, ``from 12.3 to 20``,
    ``00:12 - 00:20`` (mm:ss or hh:mm:ss) and ``12.3s to 20s``. A reversed span is
    swapped; with ``duration`` both ends are clipped to ``[0, duration]``.

    Args:
        text: The answer.
        duration: The video's length in seconds (needed for temporal tokens).
        num_bins: How many temporal bins the model was trained with (needed for tokens).

    Returns:
        ``(start, end)`` with ``start <= end``, or ``None`` when nothing parses (also for
        bin tokens outside ``[0, num_bins)``).

    Raises:
        ValueError: the answer has temporal tokens but ``duration`` or ``num_bins`` is missing.
    """
    tokens = _TOKENS_RE.search(text)
    if tokens:
        if duration is None or num_bins is None:
            raise ValueError(f"answer {text!r} has temporal tokens: pass duration and num_bins to convert them to seconds")
        start_bin, end_bin = int(tokens.group(1)), int(tokens.group(2))
        if not (0 <= start_bin < num_bins and 0 <= end_bin < num_bins):
            return None
        start, end = bins_to_seconds(start_bin, end_bin, duration, num_bins)
    else:
        pair = _PAIR_RE.search(text)
        if not pair:
            return None
        start, end = _seconds(pair.group(1)), _seconds(pair.group(2))
    start, end = min(start, end), max(start, end)
    if duration is not None:
        start, end = min(max(start, 0.0), duration), min(max(end, 0.0), duration)
    return start, end


def temporal_iou(a: Span, b: Span) -> float:
    """Intersection over union of two spans; reversed spans are swapped, empty ones give 0."""
    (a0, a1), (b0, b1) = sorted(a), sorted(b)
    inter = min(a1, b1) - max(a0, b0)
    if inter <= 0:
        return 0.0
    return inter / (max(a1, b1) - min(a0, b0))


def span_ious(predictions: Sequence[Span | None], ground_truth: Sequence[Span]) -> list[float]:
    """IoU of each prediction with its gold span; ``None`` (unparsed) scores 0.

    Raises:
        ValueError: the lists differ in length, or a gold span has start >= end.
    """
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} predictions for {len(ground_truth)} ground-truth spans")
    out = []
    for i, (pred, gold) in enumerate(zip(predictions, ground_truth)):
        if not gold[0] < gold[1]:
            raise ValueError(f"ground truth {i} has start >= end: {tuple(gold)}")
        out.append(0.0 if pred is None else temporal_iou(pred, gold))
    return out


def grounding_metrics(
    predictions: Sequence[Span | None],
    ground_truth: Sequence[Span],
    thresholds: Sequence[float] = THRESHOLDS,
) -> dict[str, float | int]:
    """R1@t for each threshold and mIoU, in percent, over a test set.

    Args:
        predictions: Top-1 ``(start, end)`` per query in seconds, or ``None`` if unparsed.
        ground_truth: Gold ``(start, end)`` per query in seconds.
        thresholds: IoU thresholds (``r1@0.3`` ... keys).

    Returns:
        ``{"r1@0.3", "r1@0.5", "r1@0.7", "miou", "n", "n_unparsed"}``.
    """
    ious = span_ious(predictions, ground_truth)
    if not ious:
        raise ValueError("no predictions to score")
    n = len(ious)
    out: dict[str, float | int] = {f"r1@{t:g}": 100.0 * sum(iou >= t - _EPS for iou in ious) / n for t in thresholds}
    out["miou"] = 100.0 * sum(ious) / n
    out["n"] = n
    out["n_unparsed"] = sum(p is None for p in predictions)
    return out


if __name__ == "__main__":
    answer = sys.argv[1] if len(sys.argv) > 1 else "[12.3, 20.0]"
    print(parse_span(answer, duration=30.0, num_bins=100))
