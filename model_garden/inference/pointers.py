"""The leaf values of a JSON reply, each with its JSON Pointer and where it sits in the text.

Grounded decoding writes each value's span in the source under the value's JSON Pointer
(RFC 6901: ``/company``, ``/vehicle_info/Marque/contents``, ``/items/0``), and confidence
is written per leaf value under the same keys. ``leaves(text)`` finds every leaf (string,
number, boolean, null; an empty object or array counts as one leaf) with its character
offsets in the reply, so token probabilities can be attributed to the values they wrote.

Evaluation scores *fields*: the gold object's leaves under dotted keys, where lists are
compared whole (``evaluation.metrics``). ``metric_field`` maps a pointer to the field it
is scored under, and ``field_confidences`` gives each field the lowest confidence among
its leaves: a list is as trustworthy as its weakest item.
``resolve`` reads the value a pointer names in parsed JSON (``compare --cluster-by /company``).

Try it: ``python -m model_garden.inference.pointers '{"a": {"b": [1, "x"]}, "c": null}'``
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

_DECODER = json.JSONDecoder()
_WS = " \t\n\r"


@dataclass(frozen=True)
class Leaf:
    """One leaf value of a JSON text.

    Attributes:
        pointer: Its JSON Pointer.
        value: The decoded value.
        start: Offset of its first character in the text (the opening quote of a string).
        end: Offset just past its last character (past the closing quote).
    """

    pointer: str
    value: Any
    start: int
    end: int


def escape(key: str) -> str:
    """A key as one JSON Pointer reference token (``~`` -> ``~0``, ``/`` -> ``~1``)."""
    return key.replace("~", "~0").replace("/", "~1")


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def _walk(text: str, pos: int, pointer: str, out: list[Leaf]) -> int:
    """Parse the value at ``pos`` (valid JSON), add its leaves, return the offset after it."""
    pos = _skip(text, pos)
    opener = text[pos]
    if opener not in "{[":
        value, end = _DECODER.raw_decode(text, pos)
        out.append(Leaf(pointer, value, pos, end))
        return end
    closer, start, index = ("}" if opener == "{" else "]"), pos, 0
    pos = _skip(text, pos + 1)
    if text[pos] == closer:
        out.append(Leaf(pointer, {} if opener == "{" else [], start, pos + 1))
        return pos + 1
    while True:
        pos = _skip(text, pos)
        if opener == "{":
            key, pos = _DECODER.raw_decode(text, pos)
            pos = _skip(text, _skip(text, pos) + 1)  # past the colon
            pos = _walk(text, pos, f"{pointer}/{escape(key)}", out)
        else:
            pos = _walk(text, pos, f"{pointer}/{index}", out)
            index += 1
        pos = _skip(text, pos)
        if text[pos] == closer:
            return pos + 1
        pos += 1  # the comma


def leaves(text: str) -> list[Leaf]:
    """Every leaf of the JSON document ``text`` (one value, surrounding whitespace
    allowed), in text order.

    Raises:
        ValueError: ``text`` is not one JSON value.
    """
    json.loads(text)  # refuse anything that is not exactly one JSON value
    out: list[Leaf] = []
    _walk(text, 0, "", out)
    return out


def metric_field(pointer: str) -> str:
    """The dotted field a leaf is scored under: its object keys up to the first array
    index (``/items/0/name`` -> ``items``; lists are compared whole)."""
    keys = []
    for token in pointer.split("/")[1:]:
        if token.isdigit() and keys:  # an array index: the list is the field
            break
        keys.append(unescape(token))
    return ".".join(keys)


def resolve(value: Any, pointer: str) -> Any:
    """The value ``pointer`` names in a parsed JSON ``value`` (RFC 6901), ``None`` where
    there is none."""
    for token in pointer.split("/")[1:]:
        token = unescape(token)
        if isinstance(value, dict):
            value = value.get(token)
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            return None
    return value


def field_confidences(confidence: dict[str, float]) -> dict[str, float]:
    """Per scored field (dotted key), the lowest confidence among its leaves."""
    fields: dict[str, float] = {}
    for pointer, value in confidence.items():
        name = metric_field(pointer)
        fields[name] = min(value, fields.get(name, 1.0))
    return fields


if __name__ == "__main__":
    for leaf in leaves(sys.argv[1]):
        print(f"{leaf.pointer:24} {leaf.start:4} {leaf.end:4} {leaf.value!r} -> field {metric_field(leaf.pointer)!r}")
