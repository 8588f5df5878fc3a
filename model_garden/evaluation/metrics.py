"""Extraction metrics over predicted and gold JSON objects.

``score_records(predictions, golds)`` scores example by example into a compact
per-record table; ``aggregate(table)`` turns it into the metrics, and
``extraction_metrics`` does both. Every pooled metric is a ratio of per-record sums
(``record_ratios``), so the paired bootstrap of ``experiments.stats`` resamples records
with exactly the definitions below.

A ``None`` prediction is an *invalid* output (not exactly one JSON object, empty
included). It scores zero on every field, gold-empty ones included: not correct, ANLS 0,
CER 1; it omits every gold-filled field and hallucinates nothing; its nTED accuracy is 0
and its Donut pairs are all false negatives. (Counting it as an empty object would give
it every field whose gold is ``null``: 54.5% field accuracy for outputs none of which
parsed.) A valid ``{}`` is an answer, and is right where the gold is empty.

Fields are the gold object's leaves under dotted keys: dicts are descended
(``{"Marque": {"contents": "PEUGEOT"}}`` gives ``Marque.contents``), while lists,
scalars and empty dicts are leaves compared whole. A ``confidence_score`` beside
``contents`` is not a field: ``predict`` fills it with the model's confidence. The prediction's value is looked up
at the same path (missing = empty). Keys the prediction adds are not fields; they cost
precision and schema validity instead.

Values are compared after light normalisation: strings stripped with inner whitespace
collapsed to one space (and case-folded with ``case_insensitive``), other scalars as
their JSON text (so ``208`` equals ``"208"``), lists and dicts normalised item by item
with empty items dropped and compared by their JSON text. A value is *empty* when it
normalises to ``""``: ``None``, blank strings, ``[]``, ``{}``; *filled* otherwise.

Metrics (fractions in [0, 1], CER aside; ``None`` where nothing is counted):

- ``n``: examples. ``json_valid``: fraction of predictions that are not ``None``.
- ``schema_valid``: fraction of examples with a schema whose prediction validates
  against it (jsonschema; ``None`` predictions are invalid); ``None`` without schemas.
  ``schema_checked`` counts those examples.
- ``field_accuracy``: exact matches of normalised values over all gold fields (``fields``);
  a valid prediction is right on a gold-empty field by predicting nothing there.
- ``field_accuracy_filled``: the same over the gold-filled fields only (``gold_filled``),
  the figure a model cannot reach by predicting ``null`` everywhere.
- ``cer``: mean over gold fields of Levenshtein distance / gold length (can exceed 1).
  For an empty gold it is 0.0 if the prediction is empty too, else 1.0.
- ``anls``: mean over gold fields of ``1 - d / max(len)`` (normalised Levenshtein
  similarity), set to 0 when ``d / max(len) >= 0.5``; two empty values score 1.
- ``hallucination_rate``: among gold-empty fields, the fraction predicted non-empty
  (``hallucinations`` of ``gold_empty``). ``omission_rate``: among gold-filled fields,
  the fraction predicted empty (``omissions`` of ``gold_filled``).
- ``precision``, ``recall``, ``f1``: micro, over Donut's flattened (key, value) pairs;
  ``ted_accuracy``: mean of Donut's normalised tree-edit-distance accuracy. Both use
  Donut's own normalisation (strip only, case-sensitive; see ``donut.py``) so they
  compare with published Donut numbers, and ignore ``case_insensitive``.
- ``per_field``: ``{dotted key: {accuracy, accuracy_filled, cer, anls,
  hallucination_rate, omission_rate, n}}`` with ``n`` the examples whose gold has that field.

Try it: ``python -m model_garden.evaluation.metrics '{"a": "Paris"}' '{"a": " paris "}'``
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import jsonschema
import numpy as np
from rapidfuzz.distance import Levenshtein

from model_garden import jsonfmt
from model_garden.evaluation.donut import pair_counts, ratio, ted_accuracy

ANLS_THRESHOLD = 0.5
# Per record and field in ``score_records``' table: 0/1 flags and two scores.
FIELD_OUTCOMES = ("correct", "cer", "anls", "gold_empty", "pred_empty")
KeyPath = tuple[str, ...]
Ratios = dict[str, tuple[np.ndarray, np.ndarray]]


def _clean(value: Any, case_insensitive: bool) -> Any:
    if isinstance(value, str):
        text = " ".join(value.split())
        text = text.casefold() if case_insensitive else text
        return text or None
    if isinstance(value, list):
        items = [c for v in value if (c := _clean(v, case_insensitive)) is not None]
        return items or None
    if isinstance(value, dict):
        items = {k: c for k, v in value.items() if (c := _clean(v, case_insensitive)) is not None}
        return items or None
    return None if value is None else jsonfmt.dumps(value)


def normalize(value: Any, case_insensitive: bool = False) -> str:
    """A value's comparison text; ``""`` for an empty value."""
    cleaned = _clean(value, case_insensitive)
    if cleaned is None:
        return ""
    return cleaned if isinstance(cleaned, str) else jsonfmt.dumps(cleaned)


def without_confidence(value: Any) -> Any:
    """``value`` without the ``confidence_score`` beside each ``contents`` (the design
    notes' forms): the model's confidence, which ``predict`` fills in, not an extracted
    value, so neither a field nor a Donut pair."""
    if isinstance(value, list):
        return [without_confidence(v) for v in value]
    if not isinstance(value, dict):
        return value
    return {k: without_confidence(v) for k, v in value.items() if not (k == "confidence_score" and "contents" in value)}


def gold_fields(obj: dict[str, Any], prefix: KeyPath = ()) -> dict[KeyPath, Any]:
    """The leaves of a gold object by key path; non-empty dicts are descended."""
    fields: dict[KeyPath, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict) and value:
            fields.update(gold_fields(value, (*prefix, key)))
        else:
            fields[(*prefix, key)] = value
    return fields


def lookup(obj: Any, path: KeyPath) -> Any:
    """The value at ``path`` in a prediction; ``None`` where it does not exist."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def field_scores(pred: Any, gold: Any, case_insensitive: bool = False) -> dict[str, Any]:
    """Exact match, CER, ANLS and emptiness (0/1) of one predicted value against its gold."""
    p, g = normalize(pred, case_insensitive), normalize(gold, case_insensitive)
    distance = Levenshtein.normalized_distance(p, g)  # / max(len(p), len(g)); 0 for two empties
    return {
        "correct": int(p == g),
        "cer": Levenshtein.distance(p, g) / len(g) if g else float(bool(p)),
        "anls": 1.0 - distance if distance < ANLS_THRESHOLD else 0.0,
        "gold_empty": int(not g),
        "pred_empty": int(not p),
    }


def _invalid_scores(gold: Any, case_insensitive: bool) -> dict[str, Any]:
    return {"correct": 0, "cer": 1.0, "anls": 0.0, "gold_empty": int(not normalize(gold, case_insensitive)), "pred_empty": 1}


def _schema_validity(predictions: Sequence[Any], schema: Any) -> list[int | None]:
    schemas = schema if isinstance(schema, list) else [schema] * len(predictions)
    if len(schemas) != len(predictions):
        raise ValueError(f"{len(schemas)} schemas for {len(predictions)} predictions")
    validators: dict[str, Any] = {}
    valid: list[int | None] = []
    for pred, sch in zip(predictions, schemas):
        if sch is None:
            valid.append(None)
            continue
        key = json.dumps(sch, sort_keys=True)
        if key not in validators:
            cls = jsonschema.validators.validator_for(sch)
            try:
                cls.check_schema(sch)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
            validators[key] = cls(sch)
        valid.append(int(pred is not None and validators[key].is_valid(pred)))
    return valid


def score_records(
    predictions: Sequence[Any],
    golds: Sequence[dict[str, Any]],
    *,
    schema: dict[str, Any] | list[dict[str, Any] | None] | None = None,
    case_insensitive: bool = False,
) -> dict[str, Any]:
    """Score every example: the per-record table the metrics and the paired tests use.

    Args: as ``extraction_metrics``.

    Returns:
        Lists aligned with the examples (JSON-serialisable): ``json_valid`` (0/1),
        ``schema_valid`` (0/1, ``None`` without a schema), ``ted_accuracy``, Donut pair
        counts ``tp``, ``fp``, ``fn``, and ``fields``: ``{dotted key: {outcome: [...]}}``
        for the outcomes in ``FIELD_OUTCOMES``, ``None`` where the example's gold lacks
        the field.
    """
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} gold objects")
    if not golds:
        raise ValueError("nothing to evaluate: no examples")
    rows: list[dict[str, dict[str, Any]]] = []
    table: dict[str, Any] = {"json_valid": [], "ted_accuracy": [], "tp": [], "fp": [], "fn": []}
    for i, (pred, gold) in enumerate(zip(predictions, golds)):
        if not isinstance(gold, dict):
            raise ValueError(f"gold {i} is a {type(gold).__name__}, not a JSON object")
        pred, gold = without_confidence(pred), without_confidence(gold)
        rows.append({
            ".".join(path): field_scores(lookup(pred, path), value, case_insensitive)
            if pred is not None else _invalid_scores(value, case_insensitive)
            for path, value in gold_fields(gold).items()
        })
        table["json_valid"].append(int(pred is not None))
        table["ted_accuracy"].append(ted_accuracy(pred, gold) if pred is not None else 0.0)
        for key, count in zip(("tp", "fp", "fn"), pair_counts(pred, gold)):
            table[key].append(count)
    table["schema_valid"] = _schema_validity(predictions, schema)  # on the whole output, confidence included
    names = list(dict.fromkeys(name for row in rows for name in row))  # first-seen order
    table["fields"] = {
        name: {k: [row[name][k] if name in row else None for row in rows] for k in FIELD_OUTCOMES} for name in names
    }
    return table


def field_ratios(columns: Sequence[dict[str, list[Any]]], n: int) -> Ratios:
    """Per-record (numerator, denominator) of each field metric, summed over ``columns``
    (fields of a ``score_records`` table); a metric's value is ``sum(num) / sum(den)``."""
    arr = {k: np.array([c[k] for c in columns], dtype=float).reshape(len(columns), n) for k in FIELD_OUTCOMES}
    present = ~np.isnan(arr["correct"])  # NaN (from None): the record's gold has no such field
    filled, empty = present & (arr["gold_empty"] == 0), present & (arr["gold_empty"] == 1)
    correct, den = np.nan_to_num(arr["correct"]), present.sum(0)
    return {
        "accuracy": (correct.sum(0), den),
        "accuracy_filled": ((correct * filled).sum(0), filled.sum(0)),
        "cer": (np.nan_to_num(arr["cer"]).sum(0), den),
        "anls": (np.nan_to_num(arr["anls"]).sum(0), den),
        "hallucination_rate": ((empty & (arr["pred_empty"] == 0)).sum(0), empty.sum(0)),
        "omission_rate": ((filled & (arr["pred_empty"] == 1)).sum(0), filled.sum(0)),
    }


def record_ratios(table: dict[str, Any]) -> Ratios:
    """Per-record (numerator, denominator) of every pooled metric of a ``score_records``
    table, keyed like ``extraction_metrics``' result."""
    n = len(table["json_valid"])
    ones = np.ones(n)
    schema = np.array(table["schema_valid"], dtype=float)
    tp, fp, fn = (np.array(table[k], dtype=float) for k in ("tp", "fp", "fn"))
    fields = field_ratios(list(table["fields"].values()), n)
    return {
        "json_valid": (np.array(table["json_valid"], dtype=float), ones),
        "schema_valid": (np.nan_to_num(schema), (~np.isnan(schema)).astype(float)),
        "field_accuracy": fields.pop("accuracy"),
        "field_accuracy_filled": fields.pop("accuracy_filled"),
        **fields,
        "f1": (tp, tp + (fp + fn) / 2),  # Donut's F1 = tp / (tp + (fp + fn) / 2)
        "ted_accuracy": (np.array(table["ted_accuracy"], dtype=float), ones),
    }


def pooled(num: np.ndarray, den: np.ndarray) -> float | None:
    """``sum(num) / sum(den)``; ``None`` when nothing is counted."""
    total = float(np.sum(den))
    return float(np.sum(num)) / total if total else None


def aggregate(table: dict[str, Any]) -> dict[str, Any]:
    """The metrics (module docstring) of a ``score_records`` table; JSON-serialisable."""
    n = len(table["json_valid"])
    ratios = record_ratios(table)
    metrics = {key: pooled(*r) for key, r in ratios.items()}
    tp, fp, fn = (int(sum(table[k])) for k in ("tp", "fp", "fn"))

    def count(key: str, part: int) -> int:
        return int(ratios[key][part].sum())

    per_field = {}
    for name, column in table["fields"].items():
        ratios_f = field_ratios([column], n)
        per_field[name] = {k: pooled(*r) for k, r in ratios_f.items()} | {"n": int(ratios_f["accuracy"][1].sum())}
    return {
        "n": n,
        "json_valid": metrics["json_valid"],
        "schema_valid": metrics["schema_valid"],
        "schema_checked": count("schema_valid", 1),
        "field_accuracy": metrics["field_accuracy"],
        "field_accuracy_filled": metrics["field_accuracy_filled"],
        "fields": count("field_accuracy", 1),
        "cer": metrics["cer"],
        "anls": metrics["anls"],
        "hallucination_rate": metrics["hallucination_rate"],
        "omission_rate": metrics["omission_rate"],
        "gold_empty": count("hallucination_rate", 1),
        "hallucinations": count("hallucination_rate", 0),
        "gold_filled": count("omission_rate", 1),
        "omissions": count("omission_rate", 0),
        # Donut's rule for 0 / 0 (no pairs at all): 1.0 without errors, else 0.0
        "precision": ratio(tp, tp + fp, fp + fn),
        "recall": ratio(tp, tp + fn, fp + fn),
        "f1": ratio(tp, tp + (fp + fn) / 2, fp + fn),
        "ted_accuracy": metrics["ted_accuracy"],
        "per_field": per_field,
    }


def extraction_metrics(
    predictions: Sequence[Any],
    golds: Sequence[dict[str, Any]],
    *,
    schema: dict[str, Any] | list[dict[str, Any] | None] | None = None,
    case_insensitive: bool = False,
) -> dict[str, Any]:
    """Score predicted JSON objects against gold ones (metrics in the module docstring).

    Args:
        predictions: One parsed prediction per example; ``None`` for invalid output.
        golds: The gold objects, aligned with ``predictions``.
        schema: A JSON Schema for every example, or a list with one (or ``None``) per example.
        case_insensitive: Case-fold strings for the field metrics.

    Returns:
        The metrics; JSON-serialisable.

    Raises:
        ValueError: on mismatched lengths, no examples, a gold that is not an object, or
            an invalid schema.
    """
    return aggregate(score_records(predictions, golds, schema=schema, case_insensitive=case_insensitive))


if __name__ == "__main__":
    gold, pred = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    print(json.dumps(extraction_metrics([pred], [gold]), indent=2, ensure_ascii=False))
