"""Character classes of a reply that holds a JSON document.

``json_spans(text)`` finds the JSON document in a reply (bare, inside a ```json fence, or
after a sentence of prose), lexes it, and labels every character of ``text`` with one
class: ``punct``, ``whitespace``, ``key_quote``, ``key``, ``value_quote``, ``string``,
``number``, ``literal`` or ``other`` (anything outside the document). The strategies in
``model_garden.masking.strategies`` are defined on these classes.

The document is validated with :func:`json.JSONDecoder.raw_decode` first, so the lexer
only has to split text that is already known to be JSON.

Try it: ``python -m model_garden.masking.json_spans '{"a": [1, "x"]}'``
"""

from __future__ import annotations

import json
import re
import sys

import numpy as np

# Class codes, shared with the strategies. 0 is reserved for "not part of a reply".
PUNCT, WHITESPACE, KEY_QUOTE, KEY, VALUE_QUOTE, STRING, NUMBER, LITERAL, OTHER = range(1, 10)
CLASS_NAMES = {
    PUNCT: "punct",
    WHITESPACE: "whitespace",
    KEY_QUOTE: "key_quote",
    KEY: "key",
    VALUE_QUOTE: "value_quote",
    STRING: "string",
    NUMBER: "number",
    LITERAL: "literal",
    OTHER: "other",
}
CLASS_CODES = {name: code for code, name in CLASS_NAMES.items()}

_DECODER = json.JSONDecoder()
# Every token of a valid JSON document that is not punctuation or whitespace. A string
# followed by optional whitespace and a colon is an object key.
_VALUE_RE = re.compile(
    r'"(?:[^"\\]|\\.)*"(?P<colon>[ \t\n\r]*:)?'
    r"|-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?"
    r"|true|false|null",
    re.DOTALL,
)
_FENCE_RE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\r?\n(.*?)```", re.DOTALL)
_OPENERS_RE = re.compile(r"[{\[]")


class _Between(dict):
    """``str.translate`` table for text between value tokens: whitespace, else punctuation
    (``NaN`` and ``Infinity``, which Python's decoder accepts, count as punctuation)."""

    def __missing__(self, char: int) -> str:
        return _PUNCT


_OTHER, _PUNCT, _WHITESPACE = chr(OTHER), chr(PUNCT), chr(WHITESPACE)
_KEY_QUOTE, _KEY, _VALUE_QUOTE, _STRING = chr(KEY_QUOTE), chr(KEY), chr(VALUE_QUOTE), chr(STRING)
_NUMBER, _LITERAL = chr(NUMBER), chr(LITERAL)
_BETWEEN = _Between({ord(c): _WHITESPACE for c in " \t\n\r"})

# The vectorised lexer's byte table: what a byte is when it is outside a string. Bytes of
# multi-byte characters occur only inside strings in valid JSON; "e"/"E" are literal
# letters unless they follow a digit (an exponent).
_BYTE_CLASS = bytearray([PUNCT] * 256)
for _b in b" \t\n\r":
    _BYTE_CLASS[_b] = WHITESPACE
for _b in b"0123456789.-+":
    _BYTE_CLASS[_b] = NUMBER
for _b in b"truefalsnE":
    _BYTE_CLASS[_b] = LITERAL
_BYTE_CLASS[128:] = bytes([STRING] * 128)
_BYTE_CLASS = bytes(_BYTE_CLASS)
_NOT_WS = np.ones(256, dtype=bool)
_NOT_WS[list(b" \t\n\r")] = False
# Below this many characters the per-token regex lexer is faster than the vectorised one
# (its numpy calls cost ~20 us whatever the length; measured on SROIE and forms replies).
_VECTOR_MIN = 400


def find_json_document(text: str) -> tuple[int, int] | None:
    """Locate the JSON document inside a reply.

    A fenced block (```json ... ```) is preferred; otherwise the longest object or array
    that decodes from a ``{`` or ``[`` (so a ``[1]`` in a sentence before the real
    document is not taken for it). Surrounding whitespace is not part of it.

    Args:
        text: The reply text.

    Returns:
        ``(start, end)`` character offsets of the document, or ``None`` if there is none.
    """
    stripped_start = len(text) - len(text.lstrip())
    if text[stripped_start : stripped_start + 1] in ("{", "["):
        # A reply that is one bare document (the common case) needs no search.
        try:
            _, end = _DECODER.raw_decode(text, stripped_start)
        except ValueError:
            pass
        else:
            if not text[end:].strip():
                return stripped_start, end
    regions = [(m.start(1), m.end(1)) for m in _FENCE_RE.finditer(text)]
    regions.append((0, len(text)))
    for lo, hi in regions:
        region = text[lo:hi]
        best, covered = None, 0
        for opener in _OPENERS_RE.finditer(region):
            start = opener.start()
            if start < covered:  # inside a document already decoded
                continue
            try:
                _, end = _DECODER.raw_decode(region, start)
            except ValueError:
                continue
            covered = end
            if best is None or end - start > best[1] - best[0]:
                best = (lo + start, lo + end)
        if best is not None:
            return best
    return None


def _lex_vectorised(doc: str) -> np.ndarray | None:
    """Class codes of a valid JSON document without a regex loop: strings are the spans
    between quote pairs, keys the strings followed by a colon, everything else a byte
    table lookup. ``None`` where quote pairing does not hold (escapes) or ``NaN`` or
    ``Infinity`` appear; the regex lexer handles those."""
    raw = doc.encode()
    if b"\\" in raw or b"NaN" in raw or b"Infinity" in raw:
        return None
    b = np.frombuffer(raw, dtype=np.uint8)
    n = len(b)
    codes = np.frombuffer(raw.translate(_BYTE_CLASS), dtype=np.uint8).copy()
    quotes = np.flatnonzero(b == 34)
    opens, closes = quotes[0::2], quotes[1::2]
    # A string is a key when the first non-whitespace byte after it is a colon (the
    # document closes after its last string, so that byte always exists). In compact
    # JSON it is the very next byte: every byte that may follow a string (`:,}]`) is
    # above 32, and whitespace is not.
    after = b[closes + 1]
    if (after <= 32).any():
        solid = np.flatnonzero(_NOT_WS[b])
        after = b[solid[np.searchsorted(solid, closes + 1)]]
    is_key = after == ord(":")
    kind = np.where(is_key, np.int8(KEY), np.int8(STRING))
    # Each string's inside painted with its kind: +kind after the opening quote, -kind at
    # the closing one (distinct positions within each array, so += is exact).
    steps = np.zeros(n + 1, dtype=np.int8)
    steps[opens + 1] += kind
    steps[closes] -= kind
    inside = np.cumsum(steps[:n], dtype=np.int8)
    in_string = inside != 0
    codes[in_string] = inside[in_string]
    codes[opens] = codes[closes] = np.where(is_key, KEY_QUOTE, VALUE_QUOTE)
    # An exponent's e/E follows a digit; in true/false a letter. (A regex test for a digit
    # before an e costs three times these numpy calls.)
    exponents = np.flatnonzero(((b | 0x20) == ord("e")) & ~in_string)
    codes[exponents[codes[exponents - 1] == NUMBER]] = NUMBER
    return codes if n == len(doc) else codes[(b & 0xC0) != 0x80]  # a character's class is its first byte's


def classify(text: str, out: np.ndarray | None = None, offset: int = 0) -> bool:
    """Write the class code of every character of ``text`` into ``out``.

    Args:
        text: A reply.
        out: A ``uint8`` array to fill at ``out[offset : offset + len(text)]``; a new one if
            ``None`` (then ``offset`` must be 0).
        offset: Where ``text`` starts in ``out``.

    Returns:
        True if a JSON document was found; otherwise every character is ``other``.
    """
    if out is None:
        out = np.empty(len(text), dtype=np.uint8)
    view = out[offset : offset + len(text)]
    doc = find_json_document(text)
    if doc is None:
        view[:] = OTHER
        return False
    start, end = doc
    if end - start >= _VECTOR_MIN and (codes := _lex_vectorised(text[start:end])) is not None:
        view[:start] = OTHER
        view[start:end] = codes
        view[end:] = OTHER
        return True
    # Built as a string of class codes, one character per character of the reply: a
    # handful of string operations per JSON token instead of numpy writes. Between value
    # tokens a valid document holds only punctuation and whitespace.
    parts, cursor = [_OTHER * start], start
    for m in _VALUE_RE.finditer(text, start, end):
        s, e = m.span()
        parts.append(text[cursor:s].translate(_BETWEEN))
        first = text[s]
        if first == '"':
            colon = m.start("colon")
            if colon >= 0:  # an object key; the whitespace and colon after it keep their classes
                parts += [_KEY_QUOTE, _KEY * (colon - s - 2), _KEY_QUOTE, text[colon:e].translate(_BETWEEN)]
            else:
                parts += [_VALUE_QUOTE, _STRING * (e - s - 2), _VALUE_QUOTE]
        elif first in "tfn":
            parts.append(_LITERAL * (e - s))
        else:
            parts.append(_NUMBER * (e - s))
        cursor = e
    parts += [text[cursor:end].translate(_BETWEEN), _OTHER * (len(text) - end)]
    view[:] = np.frombuffer("".join(parts).encode("latin-1"), dtype=np.uint8)
    return True


def json_spans(text: str) -> list[tuple[int, int, str]]:
    """Split a reply into maximal runs of one character class.

    Args:
        text: The reply (the assistant message's content).

    Returns:
        ``[(start, end, kind)]`` covering ``text`` in order, ``kind`` one of ``punct``,
        ``whitespace``, ``key_quote``, ``key``, ``value_quote``, ``string``, ``number``,
        ``literal``, ``other``. Adjacent characters of one class form one span. A reply
        without a JSON document is a single ``other`` span.
    """
    if not text:
        return []
    classes = np.empty(len(text), dtype=np.uint8)
    classify(text, classes)
    bounds = np.flatnonzero(np.diff(classes)) + 1
    starts = np.concatenate(([0], bounds)).tolist()
    ends = np.concatenate((bounds, [len(text)])).tolist()
    return [(s, e, CLASS_NAMES[int(classes[s])]) for s, e in zip(starts, ends)]


if __name__ == "__main__":
    sample = sys.argv[1] if len(sys.argv) > 1 else '{"name": "John", "age": 30, "ok": true}'
    for s, e, kind in json_spans(sample):
        print(f"{kind:12s} {sample[s:e]!r}")
