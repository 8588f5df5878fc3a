"""Donut's JSON-parse metrics: micro F1 over flattened (key, value) pairs and normalised
tree-edit-distance accuracy, giving the same numbers as ``JSONParseEvaluator`` in
clovaai/donut (``donut/util.py``), so results compare with published Donut scores.

Donut's rules, kept here exactly (quirks included):

- ``donut_normalize``: an empty or falsy value (``None``, ``""``, ``0``, ``False``,
  ``[]``, ``{}``) is ``{}``; dict keys are sorted by (length, key) and every value
  becomes a list, with falsy values dropped; a list of dicts keeps its non-empty dicts;
  any other list keeps its ``str``, ``int`` and ``float`` items as stripped strings,
  dropping blank ones; a scalar becomes ``[str(value).strip()]`` (so ``True`` is
  ``"True"``, ``2`` and ``"2"`` are equal, and a blank string in a dict survives as
  ``""``).
- ``flatten``: nested dicts give dotted keys; lists are flattened item by item, so
  ``{"menu": [{"nm": "cake"}, {"nm": "tea"}]}`` is ``[("menu.nm", "cake"), ("menu.nm", "tea")]``.
- F1: pairs are matched as multisets; ``F1 = tp / (tp + (fp + fn) / 2)`` with counts
  summed over the whole set (micro). Precision ``tp / (tp + fp)`` and recall
  ``tp / (tp + fn)`` come from the same counts (Donut reports F1 only).
- Tree: ``<root>``, a node per key, ``<subtree>`` per dict in a list, ``<leaf>text`` per
  value. Costs (Zhang-Shasha, ``zss``): inserting or removing a leaf costs its text
  length, any other node 1; relabelling leaf to leaf costs the Levenshtein distance of
  the texts, leaf to non-leaf ``1 + len(text)``, non-leaf to non-leaf ``0`` or ``1``.
  Accuracy is ``max(0, 1 - TED(pred, gold) / TED(empty, gold))``.

Where Donut divides by zero we decide: a ratio with nothing to count (``0 / 0``) is
1.0 if there is no error at all, else 0.0 (Donut raises); an empty gold tree scores
1.0 against an empty prediction and 0.0 against anything else (Donut's numpy division
gives ``nan`` there, which its ``max(0, ...)`` turns into 0 whatever the prediction).

Try it: ``python -m model_garden.evaluation.donut '{"a": "xy", "b": "z"}' '{"a": "xy", "b": "w"}'``
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

import zss
from rapidfuzz.distance import Levenshtein

LEAF = "<leaf>"


def donut_normalize(data: Any) -> dict | list:
    """Donut's ``normalize_dict``: sorted keys, list-wrapped values, empties dropped."""
    if not data:
        return {}
    if isinstance(data, dict):
        out = {}
        for key in sorted(data, key=lambda k: (len(k), k)):
            value = donut_normalize(data[key])
            if value:
                out[key] = value if isinstance(value, list) else [value]
        return out
    if isinstance(data, list):
        if all(isinstance(item, dict) for item in data):
            return [norm for item in data if (norm := donut_normalize(item))]
        return [str(item).strip() for item in data if type(item) in (str, int, float) and str(item).strip()]
    return [str(data).strip()]


def flatten(data: Any, key: str = "") -> list[tuple[str, Any]]:
    """Donut's ``flatten``: ``(dotted key, value)`` pairs, lists flattened item by item."""
    if isinstance(data, dict):
        return [pair for k, v in data.items() for pair in flatten(v, f"{key}.{k}" if key else k)]
    if isinstance(data, list):
        return [pair for item in data for pair in flatten(item, key)]
    return [(key, data)]


def pair_counts(pred: Any, gold: Any) -> tuple[int, int, int]:
    """``(true positives, false positives, false negatives)`` of one example's pairs."""
    predicted = Counter(flatten(donut_normalize(pred)))
    expected = Counter(flatten(donut_normalize(gold)))
    tp = sum((predicted & expected).values())
    return tp, predicted.total() - tp, expected.total() - tp


def ratio(num: float, den: float, errors: int) -> float:
    """``num / den``; ``0 / 0`` is 1.0 without errors and 0.0 with some."""
    return num / den if den else float(errors == 0)


def _tree(data: dict | list, name: str = "<root>") -> zss.Node:
    node = zss.Node(name)
    if isinstance(data, dict):
        for key, value in data.items():
            node.addkid(_tree(value, key))
    elif all(isinstance(item, dict) for item in data):
        for item in data:
            node.addkid(_tree(item, "<subtree>"))
    else:
        for item in data:
            node.addkid(zss.Node(f"{LEAF}{item}"))
    return node


def _leaf_text(node: zss.Node) -> str | None:
    return node.label.replace(LEAF, "") if LEAF in node.label else None


def _update_cost(a: zss.Node, b: zss.Node) -> int:
    text_a, text_b = _leaf_text(a), _leaf_text(b)
    if text_a is not None and text_b is not None:
        return Levenshtein.distance(text_a, text_b)
    if text_a is not None or text_b is not None:
        return 1 + len(text_a if text_a is not None else text_b)
    return int(a.label != b.label)


def _insert_remove_cost(node: zss.Node) -> int:
    text = _leaf_text(node)
    return 1 if text is None else len(text)


def tree_distance(pred: Any, gold: Any) -> float:
    """Donut's tree edit distance between two (un-normalised) JSON values."""
    distance = zss.distance(
        _tree(donut_normalize(pred)),
        _tree(donut_normalize(gold)),
        get_children=zss.Node.get_children,
        insert_cost=_insert_remove_cost,
        remove_cost=_insert_remove_cost,
        update_cost=_update_cost,
    )
    return float(distance)  # a numpy scalar otherwise, which leaks into reports


def ted_accuracy(pred: Any, gold: Any) -> float:
    """Donut's nTED accuracy of one example: ``max(0, 1 - TED(pred, gold) / TED({}, gold))``."""
    distance, worst = tree_distance(pred, gold), tree_distance({}, gold)
    if worst == 0:
        return float(distance == 0)
    return max(0.0, 1.0 - distance / worst)


if __name__ == "__main__":
    gold, pred = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    tp, fp, fn = pair_counts(pred, gold)
    print(f"pairs: tp={tp} fp={fp} fn={fn}  TED={tree_distance(pred, gold)}  nTED accuracy={ted_accuracy(pred, gold):.4f}")
