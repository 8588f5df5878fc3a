"""Grounded decoding: every string value of the reply is a span of the record's source text.

The plain constraint (``model_garden.grammar``) keeps a reply valid for its JSON schema,
but a string value may still be anything: a date that appears nowhere in the receipt
looks exactly like a right one. Here the schema is compiled into a Lark grammar for
llguidance in which every string value is one terminal, ``"`` + a contiguous span of the
source text + ``"``, written with llguidance's ``%regex {"substring_chunks": [...]}``:
one chunk per source character, JSON-escaped, so quotes and backslashes in the text stay
valid JSON. Each run of whitespace, line breaks included, is read as one space, so a
value may run over several lines of the source, joined as the training targets join them
(and as evaluation compares values: whitespace collapsed).

Everything that is not a string follows the schema exactly as the plain constraint does:
object keys in schema order (optional ones may be left out), the layout of
``model_garden.jsonfmt``, and numbers, booleans, ``null``, enums and consts through an
inline ``%json`` schema with the same ``JSON_OPTIONS``. Only the schema's declared
properties are written (a grounded reply adds no key of its own). A string under
``pattern`` or a length bound is a span that also matches them (llguidance intersects the
two); ``format`` cannot be checked on a span and is refused, as are schemas that leave a
value's type open; the message names the value's JSON Pointer.

One grammar per record (the source differs), compiled in a few milliseconds; the same
Lark text goes to every engine (``hf`` through ``grammar.lark_matcher``, ONNX Runtime
GenAI and vLLM as a ``lark_grammar`` / ``grammar`` guidance).

After decoding, ``value_spans`` finds each string value in the source and reports its
``[start, end]`` character offsets, keyed by JSON Pointer; a value that occurs several
times is reported at its first occurrence.

Try it: ``python -m model_garden.inference.grounding`` prints the grammar of a small
schema and source.
"""

from __future__ import annotations

import json
from typing import Any

from model_garden.data.sample import DataError, Sample
from model_garden.grammar import JSON_OPTIONS, SchemaError
from model_garden.inference.pointers import escape, leaves

# Keywords that say nothing about which values are allowed.
_ANNOTATIONS = {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly", "$schema", "$id"}
_UNSUPPORTED_STRING = ("format", "contentEncoding", "contentMediaType")
# One character of a JSON string's text: a plain one or an escape (\uXXXX counts as 1).
_JSON_CHAR = r'(?:[^"\\]|\\u[0-9a-fA-F]{4}|\\.)'


def _pattern_regex(pattern: str) -> str:
    """A JSON Schema ``pattern`` (a search, anchors optional) as a whole-text regex."""
    head = "" if pattern.startswith("^") else ".*"
    tail = "" if pattern.endswith("$") and not pattern.endswith("\\$") else ".*"
    body = pattern[1 if not head else 0 : len(pattern) - (0 if tail else 1)]
    return f"{head}(?:{body}){tail}"


_SCALARS = ("null", "boolean", "number", "integer")


def normalized_source(text: str) -> tuple[str, list[int]]:
    """The source with each run of whitespace (line breaks included) read as one space,
    and, per character of it, the offset in ``text`` of the character it came from."""
    chars, origin = [], []
    for i, ch in enumerate(text):
        if ch.isspace():
            if chars and chars[-1] == " " and text[i - 1].isspace():
                continue  # the rest of a run
            ch = " "
        chars.append(ch)
        origin.append(i)
    return "".join(chars), origin


def _literal(text: str) -> str:
    """A Lark string literal matching ``text`` exactly."""
    return json.dumps(text, ensure_ascii=False)


class _LarkWriter:
    """Turns one JSON schema into Lark rules (see the module docstring)."""

    def __init__(self, root: dict[str, Any]):
        self.root = root
        self.defs = {k: root[k] for k in ("$defs", "definitions") if k in root}
        self.rules: list[str] = []
        self.refs: list[str] = []  # $refs being expanded: a cycle cannot be written out

    def _resolve(self, schema: Any, pointer: str) -> dict[str, Any]:
        if schema is True or schema == {}:
            raise SchemaError(f"grounded decoding needs the type of the value at {pointer or '/'}; the schema leaves it open")
        if not isinstance(schema, dict):
            raise SchemaError(f"the schema of the value at {pointer or '/'} is not an object")
        return schema

    def _deref(self, ref: str, pointer: str) -> dict[str, Any]:
        if ref != "#" and not ref.startswith("#/"):
            raise SchemaError(f"grounded decoding resolves only local $refs ('#/...'); {ref!r} at {pointer or '/'}")
        if ref in self.refs:
            raise SchemaError(f"grounded decoding cannot write a recursive schema ({ref} at {pointer or '/'})")
        target: Any = self.root
        for token in ref[2:].split("/") if ref != "#" else []:
            target = target.get(token.replace("~1", "/").replace("~0", "~")) if isinstance(target, dict) else None
        if target is None:
            raise SchemaError(f"$ref {ref!r} at {pointer or '/'} points at nothing")
        return target

    def _json(self, schema: dict[str, Any]) -> str:
        """The plain constraint's grammar for a value without strings."""
        return "%json " + json.dumps({**schema, **self.defs, "x-guidance": JSON_OPTIONS}, ensure_ascii=False)

    def _rule(self, body: str) -> str:
        name = f"v{len(self.rules)}"
        self.rules.append(f"{name}: {body}")
        return name

    def value(self, schema: Any, pointer: str) -> str:
        """A Lark expression for any value the schema allows at ``pointer``."""
        schema = self._resolve(schema, pointer)
        if "$ref" in schema:
            ref = schema["$ref"]
            rest = {k: v for k, v in schema.items() if k != "$ref" and k not in _ANNOTATIONS}
            target = self._deref(ref, pointer)
            self.refs.append(ref)
            try:
                return self.value({**target, **rest}, pointer)
            finally:
                self.refs.pop()
        if "const" in schema or "enum" in schema:
            return self._json(schema)  # a fixed set of values: nothing to copy
        for key in ("anyOf", "oneOf"):
            if key in schema:
                base = {k: v for k, v in schema.items() if k != key}
                return "(" + " | ".join(self.value({**base, **branch}, pointer) for branch in schema[key]) + ")"
        types = schema.get("type")
        if types is None:
            raise SchemaError(f"grounded decoding needs the type of the value at {pointer or '/'}; the schema leaves it open")
        if isinstance(types, list):
            return "(" + " | ".join(self.value({**schema, "type": t}, pointer) for t in types) + ")"
        if types in _SCALARS:
            return self._json(schema)
        if types == "string":
            return self._string(schema, pointer)
        if types == "object":
            return self._object(schema, pointer)
        if types == "array":
            return self._array(schema, pointer)
        raise SchemaError(f"unknown type {types!r} at {pointer or '/'}")

    def _string(self, schema: dict[str, Any], pointer: str) -> str:
        """A span of the source; under ``pattern`` or length bounds, a span that also
        matches them (the intersection of the two languages)."""
        if unsupported := [k for k in _UNSUPPORTED_STRING if k in schema]:
            raise SchemaError(f"grounded decoding cannot check '{unsupported[0]}' at {pointer or '/'} on a span of the source; drop it or decode without --grounded")
        bounds = []
        if "pattern" in schema:
            bounds.append(_pattern_regex(schema["pattern"]))
        if "minLength" in schema or "maxLength" in schema:
            bounds.append(f"{_JSON_CHAR}{{{int(schema.get('minLength', 0))},{'' if 'maxLength' not in schema else int(schema['maxLength'])}}}")
        if not bounds:
            return "GROUNDED"
        name = f"S{len(self.rules)}"
        regexes = " & ".join("/" + b.replace("/", "\\/") + "/" for b in bounds)
        self.rules.append(f'{name}: "\\"" (SPAN & {regexes}) "\\""')
        return name

    def _object(self, schema: dict[str, Any], pointer: str) -> str:
        props = schema.get("properties") or {}
        if schema.get("patternProperties") or (not props and schema.get("additionalProperties", True) is not False):
            raise SchemaError(f"grounded decoding writes only declared properties; the object at {pointer or '/'} declares none")
        required = set(schema.get("required", []))
        # first[i]: properties i.. when none is written yet; more[i]: after one was written.
        first, more = '"}"', '"}"'
        for i, (key, sub) in reversed(list(enumerate(props.items()))):
            val = self.value(sub, f"{pointer}/{escape(key)}")
            head = f"{_literal(json.dumps(key, ensure_ascii=False) + ': ')} {val}"
            with_first = f"{head} {more}"
            with_more = f"{_literal(', ')} {head} {more}"
            if key in required:
                first, more = self._rule(with_first), self._rule(with_more)
            else:
                first, more = self._rule(f"{with_first} | {first}"), self._rule(f"{with_more} | {more}")
        return f'"{{" {first}'

    def _array(self, schema: dict[str, Any], pointer: str) -> str:
        if "prefixItems" in schema or isinstance(schema.get("items"), list):
            raise SchemaError(f"grounded decoding does not write tuple arrays (prefixItems) at {pointer or '/'}")
        item = self._rule(self.value(schema.get("items", True), f"{pointer}/*"))
        low, high = int(schema.get("minItems", 0)), schema.get("maxItems")
        more = f'({_literal(", ")} {item})'
        if high is not None and int(high) == 0:
            return '"[" "]"'
        reps = "*" if high is None else f"{{0,{int(high) - 1}}}"
        if low == 0:
            return f'"[" ({item} {more}{reps})? "]"'
        reps = f"{{{low - 1},}}" if high is None else f"{{{low - 1},{int(high) - 1}}}"
        return f'"[" {item} {more}{reps} "]"'


def grounded_grammar(schema: dict[str, Any], source: str) -> str:
    """The Lark grammar of replies that follow ``schema`` with every string value a span
    of ``source``.

    Raises:
        SchemaError: the schema has a part grounded decoding cannot write (the message
            names its JSON Pointer).
    """
    if not isinstance(schema, dict):
        raise SchemaError(f"a JSON schema must be an object, not {type(schema).__name__}")
    writer = _LarkWriter(schema)
    start = writer.value(schema, "")
    norm, _ = normalized_source(source)
    chunks = [json.dumps(ch, ensure_ascii=False)[1:-1] for ch in norm]
    lines = [f"start: {start}", *writer.rules, 'GROUNDED: "\\"" SPAN "\\""',
             "SPAN: %regex " + json.dumps({"substring_chunks": chunks}, ensure_ascii=False)]
    return "\n".join(lines) + "\n"


def grounded_constraint(schema: dict[str, Any], sample: Sample, source_field: str) -> str:
    """The grounded grammar of one sample's reply (``--grounded``).

    Raises:
        DataError: the sample has no source text (an image-only prompt), naming it.
        SchemaError: as ``grounded_grammar``.
    """
    source = sample.source_text(source_field)
    if not source:
        raise DataError(
            f"{sample.where}: --grounded needs a source text to copy values from, and this record has none "
            f"(no '{source_field}' string, no text in its user turns); add one (--source-field names the key) or decode without --grounded"
        )
    return grounded_grammar(schema, source)


def value_spans(reply: str, source: str) -> dict[str, list[int]]:
    """Each string value of a JSON reply located in ``source``: ``{pointer: [start, end]}``
    character offsets into ``source`` (whitespace runs matched as one space, as decoding
    read them; the first occurrence). Values not found are left out; an empty string
    is reported at ``[0, 0]``."""
    norm, origin = normalized_source(source)
    spans = {}
    for leaf in leaves(reply):
        if not isinstance(leaf.value, str):
            continue
        if not leaf.value:
            spans[leaf.pointer] = [0, 0]
        elif (at := norm.find(leaf.value)) >= 0:
            spans[leaf.pointer] = [origin[at], origin[at + len(leaf.value) - 1] + 1]
    return spans

if __name__ == "__main__":
    demo = {"type": "object", "properties": {"company": {"type": ["string", "null"]}, "total": {"type": "number"}},
            "required": ["company", "total"], "additionalProperties": False}
    print(grounded_grammar(demo, "ACME SDN BHD\nTOTAL 9.00"))
