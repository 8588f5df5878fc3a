"""How well confidence tells right fields from wrong ones, and the calibration map fitted
on it (``model-garden calibrate``).

Inputs are per scored field (a dotted key of the gold, as in ``evaluation.metrics``): a
confidence in [0, 1] and whether the field is right (the ``correct`` outcome of
``metrics.score_records``). A field's confidence is the lowest over its leaf values
(``inference.pointers.field_confidences``). The measures (AUROC, ECE,
precision-coverage, the isotonic fit) are defined in ``evaluation.reliability``.

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

from model_garden.evaluation.reliability import (
    as_arrays,
    auroc,
    coverage_at,
    expected_calibration_error,
    fit_isotonic,
    precision_coverage,
    reliability_bins,
    threshold_for_precision,
)
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


def _columns(outcomes: Sequence[Outcome]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outcomes as arrays: field names, confidences, right."""
    return np.array([o[0] for o in outcomes]), *as_arrays([o[1] for o in outcomes], [o[2] for o in outcomes])


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


if __name__ == "__main__":
    evaluated = evaluate_files(sys.argv[1], sys.argv[2], predicted_only=True)
    result = confidence_report(field_outcomes(read_rows(sys.argv[1]), evaluated))
    print(json.dumps({k: v for k, v in result.items() if k not in ("bins", "curve")}, indent=2))
