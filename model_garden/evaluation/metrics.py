"""Extraction metrics over predicted and gold JSON objects.

``extraction_metrics(predictions, golds)`` compares example by example; a ``None``
prediction (output that did not parse) counts as an empty object: every gold-filled
field is omitted.

Fields are the gold object's leaves under dotted keys: dicts are descended
(``{"Marque": {"contents": "PEUGEOT"}}`` gives ``Marque.contents``), while lists,
scalars and empty dicts are leaves compared whole. The prediction's value is looked up
at the same path (missing = empty). Keys the prediction adds are not fields; they cost
precision and schema validity instead.

Values are compared after light normalisation: strings stripped with inner whitespace
collapsed to one space (and case-folded with ``case_insensitive``), other scalars as
their JSON text (so ``208`` equals ``"208"``), lists and dicts normalised item by item
with empty items dropped and compared by their JSON text. A value is *empty* when it
normalises to ``""``: ``None``, blank strings, ``[]``, ``{}``.

Metrics (fractions in [0, 1]; ``None`` where nothing is counted):

- ``n``: examples. ``json_valid``: fraction of predictions that are not ``None``.
- ``schema_valid``: fraction of examples with a schema whose prediction validates
  against it (jsonschema; ``None`` predictions are invalid); ``None`` without schemas.
  ``schema_checked`` counts those examples.
- ``field_accuracy``: exact matches of normalised values over all gold fields
  (gold-empty ones included: predicting nothing there is correct).
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
- ``per_field``: ``{dotted key: {accuracy, cer, anls, hallucination_rate,
  omission_rate, n}}`` with ``n`` the examples whose gold has that field.

Try it: ``python -m model_garden.evaluation.metrics '{"a": "Paris"}' '{"a": " paris "}'``
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import jsonschema
from rapidfuzz.distance import Levenshtein

from model_garden import jsonfmt
from model_garden.evaluation.donut import pair_counts, ratio, ted_accuracy

ANLS_THRESHOLD = 0.5
PER_FIELD_KEYS = ("accuracy", "cer", "anls", "hallucination_rate", "omission_rate", "n")
KeyPath = tuple[str, ...]


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
    """Exact match, CER, ANLS and emptiness of one predicted value against its gold."""
    p, g = normalize(pred, case_insensitive), normalize(gold, case_insensitive)
    distance = Levenshtein.normalized_distance(p, g)  # / max(len(p), len(g)); 0 for two empties
    return {
        "correct": p == g,
        "cer": Levenshtein.distance(p, g) / len(g) if g else float(bool(p)),
        "anls": 1.0 - distance if distance < ANLS_THRESHOLD else 0.0,
        "gold_empty": not g,
        "pred_empty": not p,
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _summary(scores: list[dict[str, Any]]) -> dict[str, Any]:
    empty_gold = [s["pred_empty"] for s in scores if s["gold_empty"]]
    filled_gold = [s["pred_empty"] for s in scores if not s["gold_empty"]]
    return {
        "accuracy": _mean([float(s["correct"]) for s in scores]),
        "cer": _mean([s["cer"] for s in scores]),
        "anls": _mean([s["anls"] for s in scores]),
        "hallucination_rate": _mean([float(not e) for e in empty_gold]),
        "omission_rate": _mean([float(e) for e in filled_gold]),
        "n": len(scores),
        "gold_empty": len(empty_gold),
        "hallucinations": sum(not e for e in empty_gold),
        "gold_filled": len(filled_gold),
        "omissions": sum(filled_gold),
    }


def _schema_validity(predictions: Sequence[Any], schema: Any) -> tuple[float | None, int]:
    schemas = schema if isinstance(schema, list) else [schema] * len(predictions)
    if len(schemas) != len(predictions):
        raise ValueError(f"{len(schemas)} schemas for {len(predictions)} predictions")
    validators: dict[str, Any] = {}
    valid = []
    for pred, sch in zip(predictions, schemas):
        if sch is None:
            continue
        key = json.dumps(sch, sort_keys=True)
        if key not in validators:
            cls = jsonschema.validators.validator_for(sch)
            try:
                cls.check_schema(sch)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
            validators[key] = cls(sch)
        valid.append(pred is not None and validators[key].is_valid(pred))
    return _mean([float(v) for v in valid]), len(valid)


def extraction_metrics(
    predictions: Sequence[Any],
    golds: Sequence[dict[str, Any]],
    *,
    schema: dict[str, Any] | list[dict[str, Any] | None] | None = None,
    case_insensitive: bool = False,
) -> dict[str, Any]:
    """Score predicted JSON objects against gold ones (metrics in the module docstring).

    Args:
        predictions: One parsed prediction per example; ``None`` for unparseable output.
        golds: The gold objects, aligned with ``predictions``.
        schema: A JSON Schema for every example, or a list with one (or ``None``) per example.
        case_insensitive: Case-fold strings for the field metrics.

    Returns:
        The metrics; JSON-serialisable.

    Raises:
        ValueError: on mismatched lengths, no examples, a gold that is not an object, or
            an invalid schema.
    """
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} gold objects")
    if not golds:
        raise ValueError("nothing to evaluate: no examples")
    per_field: dict[KeyPath, list[dict[str, Any]]] = {}
    tp = fp = fn = 0
    teds = []
    for i, (pred, gold) in enumerate(zip(predictions, golds)):
        if not isinstance(gold, dict):
            raise ValueError(f"gold {i} is a {type(gold).__name__}, not a JSON object")
        for path, gold_value in gold_fields(gold).items():
            per_field.setdefault(path, []).append(field_scores(lookup(pred, path), gold_value, case_insensitive))
        counts = pair_counts(pred, gold)
        tp, fp, fn = tp + counts[0], fp + counts[1], fn + counts[2]
        teds.append(ted_accuracy(pred, gold))
    schema_valid, schema_checked = _schema_validity(predictions, schema)
    overall = _summary([s for scores in per_field.values() for s in scores])
    return {
        "n": len(golds),
        "json_valid": sum(p is not None for p in predictions) / len(predictions),
        "schema_valid": schema_valid,
        "schema_checked": schema_checked,
        "field_accuracy": overall.pop("accuracy"),
        "fields": overall.pop("n"),
        **overall,
        "precision": ratio(tp, tp + fp, fp + fn),
        "recall": ratio(tp, tp + fn, fp + fn),
        "f1": ratio(tp, tp + (fp + fn) / 2, fp + fn),
        "ted_accuracy": sum(teds) / len(teds),
        "per_field": {
            ".".join(path): {k: v for k, v in _summary(scores).items() if k in PER_FIELD_KEYS}
            for path, scores in per_field.items()
        },
    }


if __name__ == "__main__":
    gold, pred = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    print(json.dumps(extraction_metrics([pred], [gold]), indent=2, ensure_ascii=False))
