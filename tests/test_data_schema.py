"""Finding a dataset's answer schema: explicit file, schema.json, record, prompt.

Run: ``.venv/bin/python -m pytest tests/test_data_schema.py -q``
"""

from __future__ import annotations

import json

import pytest

from model_garden.data.sample import Sample
from model_garden.data.schema import embed_schema, find_embedded_schema, load_schema, schema_for

SCHEMA = {"type": "object", "properties": {"total": {"type": ["string", "null"]}}, "required": ["total"]}
OTHER = {"type": "object", "properties": {"company": {"type": "string"}}}


def _messages(user_content) -> list[dict]:
    return [{"role": "user", "content": user_content}, {"role": "assistant", "content": "{}"}]


def test_embedded_schema_round_trips_and_skips_other_objects():
    assert find_embedded_schema(embed_schema(SCHEMA)) == SCHEMA
    text = 'Hi {not json}. Example answer {"total": "3.00"}; bad {"type": "colour"}.\n' + embed_schema(SCHEMA) + "\nReceipt: {x}"
    assert find_embedded_schema(text) == SCHEMA
    assert find_embedded_schema('no schema here {"type": "colour"} {"a": {"type": "string"}}') is None
    assert find_embedded_schema("") is None


def test_prompt_schema_from_string_or_parts():
    assert schema_for(None, _messages(embed_schema(SCHEMA))) == SCHEMA
    parts = [{"type": "text", "text": embed_schema(SCHEMA)}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    assert schema_for(None, _messages(parts)) == SCHEMA
    system_only = [{"role": "system", "content": embed_schema(SCHEMA)}, {"role": "assistant", "content": "{}"}]
    assert schema_for(None, system_only) is None


def test_lookup_order(tmp_path):
    data = tmp_path / "text" / "train.jsonl"
    data.parent.mkdir()
    data.write_text("", encoding="utf-8")
    record = Sample(_messages(embed_schema(OTHER)), line=1)
    assert schema_for(data, record) == OTHER  # only the prompt has one
    assert schema_for(data, Sample(_messages("x"), line=1, schema=SCHEMA)) == SCHEMA
    assert schema_for(data) is None
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    assert schema_for(data, record) == SCHEMA  # one folder up beats the prompt
    (data.parent / "schema.json").write_text(json.dumps({**SCHEMA, "required": []}), encoding="utf-8")
    assert schema_for(data, record)["required"] == []  # beside beats one folder up
    explicit = tmp_path / "mine.json"
    explicit.write_text(json.dumps(OTHER), encoding="utf-8")
    assert schema_for(data, record, explicit=explicit) == OTHER


def test_bad_schema_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json is not JSON"):
        load_schema(bad)
    bad.write_text('{"type": "colour"}', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json is not a valid JSON Schema"):
        schema_for(None, explicit=bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        schema_for(None, explicit=tmp_path / "missing.json")


def test_free_strings_leave_out_what_the_schema_enumerates():
    from model_garden.data.schema import free_strings

    schema = {
        "$defs": {"fuel": {"enum": ["ES", "GO", "EH"]}},
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "fuel": {"$ref": "#/$defs/fuel"},
            "kind": {"anyOf": [{"const": "car"}, {"type": "null"}]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "pair": {"type": "array", "prefixItems": [{"enum": ["A"]}, {"type": "string"}]},
            "extra": {"type": "object", "additionalProperties": {"enum": ["x"]}},
        },
    }
    reply = {"name": "Ana", "fuel": "EH", "kind": "car", "tags": ["a", "", "EH"], "pair": ["A", "A"], "extra": {"k": "x"}, "other": "free"}
    assert free_strings(reply, schema) == ["Ana", "a", "EH", "A", "free"]
    assert free_strings(reply, None) == ["Ana", "EH", "car", "a", "EH", "A", "A", "x", "free"]
