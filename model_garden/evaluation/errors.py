"""What kind of wrong each wrong field is: where the errors that are left sit, and which
of them a model reading the document could have avoided.

``error_kinds`` sorts every wrong gold field (``metrics.score_records``' ``correct`` is
0) into the first kind that applies:

- ``invalid``: the output is not one JSON object, so every field is wrong.
- ``omitted``: the gold is filled and the prediction empty.
- ``hallucinated``: the gold is empty and the prediction filled.
- ``gold_not_in_source``: the gold is a string that is no span of the record's source
  text (each whitespace run read as one space, as grounded decoding reads it): the
  document does not say it as labelled (a typo or re-spacing in the label, words the
  annotator added), so grounded decoding cannot give it. Needs a source text; a record
  without one (an image-only prompt) never gets this kind.
- ``boundary``: gold and prediction are strings and one contains the other: a value cut
  a line early or late, a prefix such as a currency sign dropped or added.
- ``other``: another value: a different entity, a misread, a reformatted one.

Strings are compared as ``metrics.normalize`` compares them (whitespace collapsed,
case-folded with ``case_insensitive``), so a kind never contradicts the exact-match
outcome it explains.

Try it: ``python -m model_garden.evaluation.errors '{"t": "RM 9.00"}' '{"t": "9.00"}' 'TOTAL RM 9.00'``
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from model_garden.evaluation.metrics import gold_fields, lookup, normalize, without_confidence

KINDS = ("invalid", "omitted", "hallucinated", "gold_not_in_source", "boundary", "other")


def error_kind(pred: Any, gold: Any, source: str | None, case_insensitive: bool = False) -> str:
    """The kind (module docstring) of one wrong value: ``pred`` against its ``gold``.
    ``source`` is the record's source text normalised as the values are (whitespace runs
    as one space, case-folded with ``case_insensitive``); ``None``: no source."""
    p, g = normalize(pred, case_insensitive), normalize(gold, case_insensitive)
    if not p:
        return "omitted"
    if not g:
        return "hallucinated"
    if isinstance(gold, str) and source is not None and g not in source:
        return "gold_not_in_source"
    if isinstance(gold, str) and isinstance(pred, str) and (g in p or p in g):
        return "boundary"
    return "other"


def error_kinds(
    predictions: Sequence[Any],
    golds: Sequence[dict[str, Any]],
    sources: Sequence[str | None],
    correct: dict[str, list[int | None]],
    case_insensitive: bool = False,
) -> dict[str, Any]:
    """The wrong fields of aligned predictions (``None``: invalid output) and golds, by kind.

    Args:
        predictions: Parsed predictions, as ``metrics.score_records`` takes them.
        golds: The gold objects.
        sources: Each record's source text (``None``: none), as written.
        correct: ``{dotted field: [0/1/None per record]}``, the table's ``correct`` outcomes.
        case_insensitive: As the scoring was done.

    Returns:
        ``kinds`` (the order above), ``counts`` (``{kind: n}`` over all fields),
        ``per_field`` (``{field: {kind: n}}``) and ``records`` (per record,
        ``{field: kind}`` of its wrong fields); JSON-serialisable.
    """
    counts: Counter[str] = Counter()
    per_field: dict[str, Counter[str]] = {name: Counter() for name in correct}
    records = []
    for i, (pred, gold, source) in enumerate(zip(predictions, golds, sources)):
        pred, gold = without_confidence(pred), without_confidence(gold)
        text = None if source is None else normalize(source, case_insensitive)  # whitespace runs as one space
        wrong = {}
        for path, value in gold_fields(gold).items():
            name = ".".join(path)
            if correct[name][i] != 0:
                continue
            wrong[name] = "invalid" if pred is None else error_kind(lookup(pred, path), value, text, case_insensitive)
            counts[wrong[name]] += 1
            per_field[name][wrong[name]] += 1
        records.append(wrong)
    return {
        "kinds": list(KINDS),
        "counts": {k: counts[k] for k in KINDS},
        "per_field": {name: {k: c[k] for k in KINDS} for name, c in per_field.items()},
        "records": records,
    }


if __name__ == "__main__":
    from model_garden.evaluation.metrics import score_records

    gold, pred, source = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
    correct = {name: column["correct"] for name, column in score_records([pred], [gold])["fields"].items()}
    print(json.dumps(error_kinds([pred], [gold], [source], correct)["records"][0]))
