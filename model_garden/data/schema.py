"""The JSON Schema of a dataset's answers: where to find it, and how prompts carry it.

A schema is looked up, in order, in an explicit file (``--schema``), in ``schema.json``
beside the dataset file or one folder up (where ``make-data`` writes it), in a
``"schema"`` key of the record, and finally in the record's user prompt, where
``embed_schema`` puts it. Predict and evaluate use it to constrain decoding and to check
answers; ``free_strings`` tells the strings a reply wrote freely from those the schema
enumerates (what evaluation checks against a record's source text).

Try it: ``python -m model_garden.data.schema DATASET.jsonl`` prints the schema found for
the first record.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from model_garden.data.sample import Sample

SCHEMA_FILE = "schema.json"
SCHEMA_INTRO = "Answer with JSON that follows this schema:"
_DECODER = json.JSONDecoder()


def embed_schema(schema: dict[str, Any]) -> str:
    """The prompt sentence that hands a schema to the model (compact JSON, one line)."""
    return f"{SCHEMA_INTRO}\n{json.dumps(schema, ensure_ascii=False, separators=(',', ':'))}"


def _is_schema(obj: Any) -> bool:
    if not isinstance(obj, dict) or not ("type" in obj or "properties" in obj):
        return False
    try:
        Draft202012Validator.check_schema(obj)
    except SchemaError:
        return False
    return True


def find_embedded_schema(text: str) -> dict[str, Any] | None:
    """The first top-level JSON object in ``text`` that is a JSON Schema (it has
    ``type`` or ``properties`` and passes the metaschema), or ``None``."""
    pos = text.find("{")
    while pos >= 0:
        try:
            obj, end = _DECODER.raw_decode(text, pos)
        except ValueError:
            pos = text.find("{", pos + 1)
            continue
        if _is_schema(obj):
            return obj
        pos = text.find("{", end)  # objects nested in a non-schema object are not schemas either
    return None


def load_schema(path: str | Path) -> dict[str, Any]:
    """Read and check a schema file.

    Raises:
        ValueError: naming the file, when it is not JSON or not a valid JSON Schema.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"schema file {path} not found")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"schema file {path} is not JSON: {exc}") from None
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"schema file {path} is not a valid JSON Schema: {exc.message}") from None
    return schema


def _user_texts(messages: Sequence[dict[str, Any]]) -> list[str]:
    texts = []
    for msg in messages:
        if not isinstance(msg, dict) or msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return texts


def dataset_schema(dataset_path: str | Path | None, explicit: str | Path | None = None) -> dict[str, Any] | None:
    """The schema of a whole dataset: the ``explicit`` file (``--schema``), else
    ``schema.json`` in the dataset's folder (a folder dataset's own, or a file's) or one
    folder up; ``None`` when there is none."""
    if explicit is not None:
        return load_schema(explicit)
    if dataset_path is None:
        return None
    path = Path(dataset_path).resolve()
    folder = path if path.is_dir() else path.parent
    for candidate in (folder / SCHEMA_FILE, folder.parent / SCHEMA_FILE):
        if candidate.is_file():
            return load_schema(candidate)
    return None


def record_schema(record: Sample | Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The schema one record carries: its ``schema`` key, else the first schema in its
    user prompt (where ``embed_schema`` puts it)."""
    if isinstance(record, Sample):
        if _is_schema(record.schema):
            return record.schema
        record = record.messages
    for text in _user_texts(record):
        if (schema := find_embedded_schema(text)) is not None:
            return schema
    return None


def schema_for(
    dataset_path: str | Path | None,
    record: Sample | Sequence[dict[str, Any]] | None = None,
    explicit: str | Path | None = None,
) -> dict[str, Any] | None:
    """Find the answer schema for a dataset (and one of its records): ``dataset_schema``,
    else ``record_schema``; ``None`` when there is none anywhere."""
    found = dataset_schema(dataset_path, explicit)
    if found is None and record is not None:
        found = record_schema(record)
    return found


def _branches(schema: Any, root: dict[str, Any], seen: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The schema at one place with its local ``$ref`` and ``anyOf``/``oneOf``/``allOf``
    branches followed: every subschema a value there may be checked against."""
    if not isinstance(schema, dict):
        return []
    found = [schema]
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#") and ref not in seen:
        target: Any = root
        for token in ref[2:].split("/") if ref != "#" else []:
            target = target.get(token.replace("~1", "/").replace("~0", "~")) if isinstance(target, dict) else None
        found += _branches(target, root, seen | {ref})
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in schema.get(key, []):
            found += _branches(branch, root, seen)
    return found


def free_strings(value: Any, schema: dict[str, Any] | None, root: dict[str, Any] | None = None) -> list[str]:
    """The non-empty strings of a reply that its schema does not enumerate.

    A string an ``enum`` or ``const`` lists is the schema's choice (grounded decoding
    leaves it to the schema, and it need not be in the document); every other string was
    written, or copied, by the model. Objects are followed through ``properties`` (else
    ``additionalProperties``), arrays through ``prefixItems`` and ``items``; without a
    schema every string is free.
    """
    schema = schema if isinstance(schema, dict) else {}
    root = schema if root is None else root
    nodes = _branches(schema, root)
    if isinstance(value, str):
        fixed = [c for n in nodes for c in ([n["const"]] if "const" in n else []) + list(n.get("enum", []))]
        return [value] if value and value not in fixed else []
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            child = next((n["properties"][key] for n in nodes if key in (n.get("properties") or {})), None)
            if child is None:
                child = next((n["additionalProperties"] for n in nodes if isinstance(n.get("additionalProperties"), dict)), {})
            found += free_strings(item, child, root)
        return found
    if isinstance(value, list):
        found = []
        for i, item in enumerate(value):
            prefix = next((n["prefixItems"] for n in nodes if len(n.get("prefixItems") or []) > i), None)
            child = prefix[i] if prefix else next((n["items"] for n in nodes if isinstance(n.get("items"), dict)), {})
            found += free_strings(item, child, root)
        return found
    return []


if __name__ == "__main__":
    from model_garden.data.jsonl import iter_records

    first = next(iter_records(sys.argv[1]))
    print(json.dumps(schema_for(sys.argv[1], first), ensure_ascii=False, indent=2))
