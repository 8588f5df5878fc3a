"""How well confidence tells right fields from wrong ones, and the calibration map fitted
on it (``model-garden calibrate``).

Inputs are per scored field (a dotted key of the gold, as in ``evaluation.metrics``): a
confidence in [0, 1] and whether the field is right (the ``correct`` outcome of
``metrics.score_records``). A field's confidence is the lowest over its leaf values
(``inference.pointers.field_confidences``). Definitions, over n fields:

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

``fit_calibration`` evaluates a predictions file, picks the score aggregate with the best
AUROC (ties: ``product``), fits the map on it (per field where there is enough data) and
the thresholds for 95% and 99% precision, chosen on cross-fitted calibrated values (each
field mapped by a fit without it) and certified at 95%. Figures computed on
the split the map was fitted on are in-sample, so optimistic: check them on another split.

Try it: ``python -m model_garden.evaluation.calibration PREDS.jsonl DATASET.jsonl``
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import isotonic_regression
from scipy.stats import beta, rankdata

from model_garden.evaluation.report import evaluate_files, read_prediction_rows
from model_garden.inference.calibration_map import CalibrationMap
from model_garden.inference.confidence import AGGREGATES
from model_garden.inference.pointers import field_confidences

TARGETS = (0.95, 0.99)  # precisions the saved thresholds aim at
# Confidence level of the lower bound a saved threshold's precision must reach (docs/review.md).
THRESHOLD_LEVEL = 0.95
FOLDS = 5  # cross-fitting of the thresholds (``cross_fitted``)
MIN_FIELD_VALUES, MIN_EACH_OUTCOME = 30, 3  # below either, a field uses the pooled map
Outcome = tuple[str, float, bool]  # (dotted field, confidence, right)


def _arrays(confidence: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(confidence, dtype=float), np.asarray(correct, dtype=bool)


def _columns(outcomes: Sequence[Outcome]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outcomes as arrays: field names, confidences, right."""
    return np.array([o[0] for o in outcomes]), *_arrays([o[1] for o in outcomes], [o[2] for o in outcomes])


def auroc(confidence: ArrayLike, correct: ArrayLike) -> float | None:
    """P(a right field's confidence > a wrong one's), ties 1/2; ``None`` without both outcomes."""
    c, ok = _arrays(confidence, correct)
    n_pos, n_neg = int(ok.sum()), int((~ok).sum())
    if not n_pos or not n_neg:
        return None
    ranks = rankdata(c)  # average ranks: a tie between a right and a wrong field counts 1/2
    return float((ranks[ok].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def reliability_bins(confidence: ArrayLike, correct: ArrayLike, bins: int = 10) -> list[dict[str, Any]]:
    """Per equal-width bin of [0, 1]: ``low``, ``high``, ``n``, mean ``confidence`` and
    ``accuracy`` (``None`` for an empty bin)."""
    c, ok = _arrays(confidence, correct)
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
    c, ok = _arrays(confidence, correct)
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
    c, ok = _arrays(confidence, correct)
    accepted = c >= threshold if threshold is not None else np.zeros(len(c), dtype=bool)
    count = int(accepted.sum())
    return count / len(c), float(ok[accepted].mean()) if count else None


def fit_isotonic(confidence: ArrayLike, correct: ArrayLike) -> tuple[list[float], list[float]]:
    """The points ``(x, y)`` of the isotonic fit (module docstring), for ``CalibrationMap``."""
    c, ok = _arrays(confidence, correct)
    x, inverse, counts = np.unique(c, return_inverse=True, return_counts=True)
    accuracy = np.bincount(inverse, weights=ok) / counts
    fit = isotonic_regression(accuracy, weights=counts)
    keep = np.unique(np.r_[fit.blocks[:-1], fit.blocks[1:] - 1])  # each block's first and last; once if they are one
    return x[keep].tolist(), fit.x[keep].tolist()


def field_outcomes(rows: Sequence[dict[str, Any]], report: dict[str, Any], aggregate: str | None = None) -> list[Outcome]:
    """Each scored field's ``(field, confidence, right)``, record by record.

    Args:
        rows: The predictions file's lines, parsed.
        report: ``evaluate_files``' report of those predictions.
        aggregate: Take the confidence from ``scores[pointer][aggregate]``; by default
            from ``confidence`` (what ``predict`` wrote: calibrated if it had a map).

    A record whose output is not one JSON object gets every gold field wrong at
    confidence 0.0 (it answered nothing). Records without a prediction are left out, as
    are fields the output gave no confidence for (a missing key, say).
    """
    by_line = {row["line"]: row for row in rows}
    table = report["records"]
    outcomes = []
    for i, line in enumerate(table["line"]):
        row = by_line.get(line)
        if row is None:
            continue
        valid = bool(table["json_valid"][i])
        leaves = row.get("confidence", {}) if aggregate is None else {p: s[aggregate] for p, s in row.get("scores", {}).items()}
        confidence = field_confidences(leaves) if valid else {}
        for name, column in table["fields"].items():
            right = column["correct"][i]
            if right is None:  # this record's gold has no such field
                continue
            if not valid:
                outcomes.append((name, 0.0, False))
            elif name in confidence:
                outcomes.append((name, float(confidence[name]), bool(right)))
    return outcomes


def _summary(c: np.ndarray, ok: np.ndarray, thresholds: Mapping[Any, float | None]) -> dict[str, Any]:
    at = {}
    for target, t in thresholds.items():
        coverage, precision = coverage_at(c, ok, t)
        at[str(target)] = {"threshold": t, "coverage": coverage, "precision": precision}
    return {"n": len(c), "accuracy": float(ok.mean()), "auroc": auroc(c, ok), "ece": expected_calibration_error(c, ok), "at": at}


def confidence_report(outcomes: Sequence[Outcome], thresholds: Mapping[Any, float | None] | None = None) -> dict[str, Any]:
    """AUROC, ECE and accuracy of ``(field, confidence, right)`` outcomes, overall and per
    field; JSON-serialisable, fractions.

    Args:
        outcomes: As ``field_outcomes`` gives them; at least one.
        thresholds: ``{target: threshold}`` (a ``CalibrationMap``'s ``thresholds``): each
            one's coverage and precision is reported under ``at`` (a ``None`` threshold
            accepts nothing).

    Returns:
        ``n``, ``accuracy``, ``auroc``, ``ece``, ``at`` overall and in ``per_field``; and,
        overall only, ``bins`` (``reliability_bins``) and ``curve`` (``precision_coverage``
        as lists ``threshold``, ``coverage``, ``precision``).
    """
    if not outcomes:
        raise ValueError("no field with a confidence to report on")
    names, c, ok = _columns(outcomes)
    thresholds = thresholds or {}
    curve = dict(zip(("threshold", "coverage", "precision"), (a.tolist() for a in precision_coverage(c, ok))))
    per_field = {name: _summary(c[names == name], ok[names == name], thresholds) for name in dict.fromkeys(names.tolist())}
    return _summary(c, ok, thresholds) | {"bins": reliability_bins(c, ok), "curve": curve, "per_field": per_field}


def read_rows(predictions: str | Path) -> list[dict[str, Any]]:
    """The lines of a predictions file, parsed and checked (``read_prediction_rows``)."""
    return [obj for obj, _ in read_prediction_rows(predictions).values()]


def calibration_outcomes(predictions: str | Path, dataset: str | Path) -> dict[str, list[Outcome]]:
    """``{aggregate: field_outcomes}`` for every aggregate each value of ``predictions``
    has in its ``scores``, scored against ``dataset`` (records without a prediction left
    out). Raises ``ValueError`` when they carry no ``scores`` (written before confidence was)."""
    report = evaluate_files(predictions, dataset, predicted_only=True)
    rows = read_rows(predictions)
    scores = [s for row in rows for s in row.get("scores", {}).values()]
    present = [a for a in AGGREGATES if scores and all(a in s for s in scores)]
    if not present:
        raise ValueError(
            f"{predictions}: no confidence scores ({', '.join(AGGREGATES)} per value); "
            "predict again with a model-garden version that writes confidence"
        )
    return {a: field_outcomes(rows, report, a) for a in present}


def _fit(names: np.ndarray, c: np.ndarray, ok: np.ndarray) -> tuple[list[float], list[float], dict[str, tuple[list[float], list[float]]]]:
    """The pooled map's points and the per-field maps (where a field has enough data)."""
    per_field = {}
    for name in dict.fromkeys(names.tolist()):
        mine = ok[names == name]
        if len(mine) >= MIN_FIELD_VALUES and min(mine.sum(), (~mine).sum()) >= MIN_EACH_OUTCOME:
            per_field[name] = fit_isotonic(c[names == name], mine)
    return *fit_isotonic(c, ok), per_field


def cross_fitted(names: np.ndarray, c: np.ndarray, ok: np.ndarray, folds: int = FOLDS) -> np.ndarray:
    """Each field's calibrated confidence under a map fitted without it: the outcomes
    (in record order) cut into ``folds`` contiguous parts, each mapped by the fit on the
    others. A map's top block is all right on the data it was fitted on by construction;
    thresholds chosen there are optimistic, and no confidence bound corrects that."""
    part = np.arange(len(c)) * folds // max(len(c), 1)
    out = np.empty(len(c))
    for k in range(folds):
        held, fit_on = part == k, part != k
        if not held.any():
            continue
        x, y, per_field = _fit(names[fit_on], c[fit_on], ok[fit_on]) if fit_on.any() else ([0.0], [float(ok.mean())], {})
        out[held] = [np.interp(v, *per_field.get(name, (x, y))) for name, v in zip(names[held], c[held])]
    return out


def fit_map(outcomes: Mapping[str, Sequence[Outcome]], dataset: str | Path, level: float | None = THRESHOLD_LEVEL) -> CalibrationMap:
    """The calibration map of ``calibration_outcomes``' result (module docstring);
    ``dataset`` is only recorded in ``fitted_on``. With ``level``, the thresholds are
    chosen on cross-fitted confidences (``cross_fitted``) and certified at that level
    (``threshold_for_precision``); ``None`` takes the split's in-sample precision as it is."""
    candidates = {a: auroc(*_columns(outcomes[a])[1:]) for a in outcomes}
    # max keeps the first of equals, and AGGREGATES puts product first
    best = max(sorted(candidates, key=AGGREGATES.index), key=lambda a: -1.0 if candidates[a] is None else candidates[a])
    chosen = outcomes[best]
    if not chosen:
        raise ValueError("no field with a confidence to calibrate on")
    names, c, ok = _columns(chosen)
    x, y, per_field = _fit(names, c, ok)
    fitted_on = {"dataset": str(dataset), "fields": len(chosen)}
    cmap = CalibrationMap(best, x, y, per_field, fitted_on=fitted_on, candidates=candidates, threshold_level=level)
    calibrated = [cmap.apply(name, value) for name, value, _ in chosen] if level is None else cross_fitted(names, c, ok)
    cmap.thresholds = {str(target): threshold_for_precision(calibrated, ok, target, level) for target in TARGETS}
    return cmap


def fit_calibration(predictions: str | Path, dataset: str | Path, level: float | None = THRESHOLD_LEVEL) -> CalibrationMap:
    """Fit the calibration map of a predictions file (with ``scores``) on its dataset."""
    return fit_map(calibration_outcomes(predictions, dataset), dataset, level)


def evaluate_confidence(predictions: str | Path, report: dict[str, Any], calibration: str | Path | None = None) -> dict[str, Any] | None:
    """The ``confidence`` section of ``evaluate``'s report: ``confidence_report`` of the
    predictions' field confidences, with the 95% and 99% precision thresholds of a
    calibration map fitted on another split measured here; ``None`` for predictions
    without confidence.

    Args:
        predictions: The predictions file ``report`` scored.
        report: ``evaluate_files``' report of it.
        calibration: A ``calibration.json``: its map is applied to the predictions'
            ``scores`` and its thresholds are measured. Default: the map ``predict``
            applied (named in ``PREDICTIONS.meta.json``), if any; without one the
            confidences are raw and no threshold is measured.
    """
    rows = read_rows(predictions)
    if not any("confidence" in row for row in rows):
        return None
    if calibration is None:
        meta = Path(f"{predictions}.meta.json")
        applied = json.loads(meta.read_text(encoding="utf-8")).get("calibration") if meta.is_file() else None
        cmap = CalibrationMap.load(applied) if applied else None
        outcomes = field_outcomes(rows, report)
    else:
        cmap = CalibrationMap.load(calibration)
        outcomes = [(name, cmap.apply(name, c), right) for name, c, right in field_outcomes(rows, report, cmap.aggregate)]
    if not outcomes:
        return None
    out = confidence_report(outcomes, cmap.thresholds if cmap else None)
    return out | {"calibration": cmap.fitted_on | {"aggregate": cmap.aggregate} if cmap else None}


def confidence_metrics(report: dict[str, Any]) -> dict[str, float | None]:
    """The per-run figures ``compare`` tabulates from an ``evaluate`` report: AUROC and ECE
    of the confidences, the share of fields accepted without review at 99% precision
    (``None`` without a calibration map), and the share of string values that are no
    span of their source."""
    section, check = report.get("confidence"), report["source_check"]
    at99 = (section or {}).get("at", {}).get("0.99")
    return {
        "confidence_auroc": section["auroc"] if section else None,
        "confidence_ece": section["ece"] if section else None,
        "review_coverage_99": at99["coverage"] if at99 else None,
        "outside_source_rate": check["values_outside"] / check["values"] if check.get("values") else None,
    }


def plot_reliability(reports: Mapping[str, dict[str, Any]], path: str | Path) -> Path:
    """Reliability diagram: accuracy against mean confidence per bin, one line per
    ``confidence_report`` (e.g. ``{"raw": ..., "calibrated": ...}``), fields per bin below."""
    fig = _figure((5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    top.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfectly calibrated")
    width = 0.8 / (10 * len(reports))
    for i, (label, report) in enumerate(reports.items()):
        filled = [b for b in report["bins"] if b["n"]]
        top.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], marker="o", color=f"C{i}",
                 label=f"{label} (ECE {100 * report['ece']:.1f}%)")
        lefts = [b["low"] + 0.01 + width * (i + 0.5) for b in report["bins"]]  # the series side by side in each bin
        bottom.bar(lefts, [b["n"] for b in report["bins"]], width, color=f"C{i}")
    top.set(ylabel="accuracy", ylim=(0, 1))
    top.grid(alpha=0.3)
    top.legend(loc="upper left", frameon=False, fontsize=8)
    bottom.set(xlim=(0, 1), xlabel="confidence", ylabel="fields")
    return _save(fig, Path(path))


def plot_precision_coverage(reports: Mapping[str, dict[str, Any]], path: str | Path) -> Path:
    """Precision against coverage as the threshold falls, one line per
    ``confidence_report``, with its thresholds (``at``) marked."""
    fig = _figure((6, 4))
    ax = fig.subplots()
    for i, (label, report) in enumerate(reports.items()):
        ax.plot(report["curve"]["coverage"], report["curve"]["precision"], color=f"C{i}", label=label)
        for target, at in report["at"].items():
            if at["precision"] is not None:
                ax.plot(at["coverage"], at["precision"], marker="o", color=f"C{i}")
                label = f"{100 * float(target):g}%: confidence >= {at['threshold']:.3f}"
                ax.annotate(label, (at["coverage"], at["precision"]), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set(xlabel="coverage (fields accepted)", ylabel="precision (right among accepted)", xlim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", frameon=False, fontsize=8)
    return _save(fig, Path(path))


def _figure(size: tuple[float, float]) -> Any:
    # matplotlib only for the plots; the Figure API draws with Agg without touching pyplot's global backend
    from matplotlib.figure import Figure

    return Figure(figsize=size)


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")  # tight: keeps the labels inside the image
    return path


if __name__ == "__main__":
    evaluated = evaluate_files(sys.argv[1], sys.argv[2], predicted_only=True)
    result = confidence_report(field_outcomes(read_rows(sys.argv[1]), evaluated))
    print(json.dumps({k: v for k, v in result.items() if k not in ("bins", "curve")}, indent=2))
