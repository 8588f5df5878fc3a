"""How well a confidence tells right from wrong: the measures behind ``calibrate`` and
``evaluate``'s confidence section, on plain arrays (a confidence in [0, 1] and whether
the field is right, per field).

Definitions, over n fields:

- ``auroc``: the probability that a random right field has a higher confidence than a
  random wrong one, ties counting 1/2 (Mann-Whitney U / (n_right * n_wrong)); ``None``
  when either outcome is absent.
- ``expected_calibration_error`` (ECE): 10 equal-width bins [0, 0.1), ..., [0.9, 1.0]
  (1.0 falls in the last); the sum over bins of (count / n) * |mean confidence - accuracy|.
  ``reliability_bins`` gives the table behind it, for a reliability diagram.
- Accepting the fields whose confidence is >= t: coverage = accepted / n, precision =
  right among accepted / accepted. ``precision_coverage`` gives both for every distinct
  confidence t; ``threshold_for_precision`` the lowest t whose precision reaches a target
  (the most coverage at that precision), ``None`` if none does; with a confidence level,
  the lowest t whose precision's one-sided Clopper-Pearson lower bound reaches it
  (``precision_lower_bound``), which is how ``calibrate`` saves its thresholds: a point
  estimate on a split of a few hundred fields does not hold beyond it (docs/results/trust.md's
  pilot: "99%" on 200 fields gave 90% on new receipts).
- ``fit_isotonic``: the non-decreasing least-squares fit of correctness on confidence
  (equal confidences pooled first, weighted by their count), kept as the first and last
  point of each fitted block; ``CalibrationMap`` interpolates linearly between them, so
  it is exact on the fitted values and monotone in between.

Try it: ``python -c "from model_garden.evaluation.reliability import auroc; print(auroc([0.9, 0.8, 0.3], [1, 0, 0]))"``
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import isotonic_regression
from scipy.stats import beta, rankdata


def as_arrays(confidence: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Confidences as floats and outcomes as booleans."""
    return np.asarray(confidence, dtype=float), np.asarray(correct, dtype=bool)


def auroc(confidence: ArrayLike, correct: ArrayLike) -> float | None:
    """P(a right field's confidence > a wrong one's), ties 1/2; ``None`` without both outcomes."""
    c, ok = as_arrays(confidence, correct)
    n_pos, n_neg = int(ok.sum()), int((~ok).sum())
    if not n_pos or not n_neg:
        return None
    ranks = rankdata(c)  # average ranks: a tie between a right and a wrong field counts 1/2
    return float((ranks[ok].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def reliability_bins(confidence: ArrayLike, correct: ArrayLike, bins: int = 10) -> list[dict[str, Any]]:
    """Per equal-width bin of [0, 1]: ``low``, ``high``, ``n``, mean ``confidence`` and
    ``accuracy`` (``None`` for an empty bin)."""
    c, ok = as_arrays(confidence, correct)
    edges = np.arange(bins + 1) / bins  # i / bins is exact where linspace's i * step is not (0.3 != 3 * 0.1)
    index = np.minimum(np.searchsorted(edges, c, side="right") - 1, bins - 1)
    table = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        mean_c, mean_ok = (float(c[inside].mean()), float(ok[inside].mean())) if n else (None, None)
        table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": n, "confidence": mean_c, "accuracy": mean_ok})
    return table


def expected_calibration_error(confidence: ArrayLike, correct: ArrayLike, bins: int = 10) -> float | None:
    """ECE over equal-width bins (module docstring); ``None`` for no fields."""
    table = reliability_bins(confidence, correct, bins)
    n = sum(b["n"] for b in table)
    return sum(b["n"] / n * abs(b["confidence"] - b["accuracy"]) for b in table if b["n"]) if n else None


def precision_coverage(confidence: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds, coverage, precision)``: every distinct confidence, highest first, with
    the coverage and precision of accepting the fields at or above it."""
    c, ok = as_arrays(confidence, correct)
    order = np.argsort(-c, kind="stable")
    ranked, right = c[order], np.cumsum(ok[order])
    last = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])  # last field of each run of equal confidences
    accepted = last + 1
    return ranked[last], accepted / len(c), right[last] / accepted


def precision_lower_bound(right: ArrayLike, accepted: ArrayLike, level: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower bound at ``level`` on the precision of ``right`` of
    ``accepted`` fields: the lowest precision under which that many right ones would
    still be seen with probability ``1 - level``. ``n`` right of ``n`` gives
    ``(1 - level) ** (1 / n)``: 299 fields, all right, are needed to certify 99% at 95%."""
    k, n = np.asarray(right, dtype=float), np.asarray(accepted, dtype=float)
    return np.where(k > 0, beta.ppf(1 - level, np.maximum(k, 1), n - k + 1), 0.0)


def fields_to_certify(target: float, level: float) -> int:
    """The fewest accepted fields that can certify ``target`` precision at ``level``:
    all of them right (``precision_lower_bound``), ``n >= log(1 - level) / log(target)``."""
    return math.ceil(math.log(1 - level) / math.log(target) - 1e-9)


def threshold_for_precision(confidence: ArrayLike, correct: ArrayLike, target: float, level: float | None = None) -> float | None:
    """The lowest threshold whose accepted fields have precision >= ``target`` (with
    ``level``: whose precision's lower bound at that confidence level does, so that the
    target holds beyond the split with that probability); ``None`` if none."""
    thresholds, coverage, precision = precision_coverage(confidence, correct)
    if level is not None:
        accepted = np.rint(coverage * len(np.atleast_1d(confidence)))
        precision = precision_lower_bound(np.rint(precision * accepted), accepted, level)
    reached = np.flatnonzero(precision >= target)
    return float(thresholds[reached[-1]]) if len(reached) else None


def coverage_at(confidence: ArrayLike, correct: ArrayLike, threshold: float | None) -> tuple[float, float | None]:
    """``(coverage, precision)`` of accepting confidence >= ``threshold``; precision is
    ``None`` when nothing is accepted, and a ``None`` threshold accepts nothing."""
    c, ok = as_arrays(confidence, correct)
    accepted = c >= threshold if threshold is not None else np.zeros(len(c), dtype=bool)
    count = int(accepted.sum())
    return count / len(c), float(ok[accepted].mean()) if count else None


def fit_isotonic(confidence: ArrayLike, correct: ArrayLike) -> tuple[list[float], list[float]]:
    """The points ``(x, y)`` of the isotonic fit (module docstring), for ``CalibrationMap``."""
    c, ok = as_arrays(confidence, correct)
    x, inverse, counts = np.unique(c, return_inverse=True, return_counts=True)
    accuracy = np.bincount(inverse, weights=ok) / counts
    fit = isotonic_regression(accuracy, weights=counts)
    keep = np.unique(np.r_[fit.blocks[:-1], fit.blocks[1:] - 1])  # each block's first and last; once if they are one
    return x[keep].tolist(), fit.x[keep].tolist()
