"""Grounded decoding: the grammar lets string values be spans of the source and nothing
else, follows the schema everywhere else, and a model pushed toward an invented value
still writes a span, whose offsets point at its text.

Run: ``.venv/bin/python -m pytest tests/test_grounding.py -q``
"""

from __future__ import annotations

import json

import pytest

from model_garden import jsonfmt
from model_garden.data.sample import DataError, Sample
from model_garden.grammar import SchemaError, grammar_allows
from model_garden.inference.grounding import grounded_constraint, grounded_grammar, normalized_source, value_spans

SOURCE = 'ACME SDN BHD\nNO. 5, JALAN "KUCHAI"\r\nKUALA LUMPUR\nDATE 01/02/2018 C:\\TILL\nTOTAL 9.00'
RECEIPT = {
    "type": "object",
    "properties": {
        "company": {"type": "string"},
        "date": {"type": ["string", "null"]},
        "total": {"type": "number"},
        "paid": {"type": "boolean"},
        "kind": {"enum": ["cash", "card"]},
    },
    "required": ["company", "date", "total", "paid", "kind"],
    "additionalProperties": False,
}


def _allows(tok, schema, reply, source=SOURCE) -> bool:
    return grammar_allows(tok, grounded_grammar(schema, source), reply)


def _reply(**values) -> str:
    return jsonfmt.dumps({"company": "ACME SDN BHD", "date": "01/02/2018", "total": 9.0, "paid": True, "kind": "cash"} | values)


@pytest.mark.parametrize(
    ("values", "allowed"),
    [
        ({}, True),
        ({"company": "ACME SDN BHD NO. 5, JALAN \"KUCHAI\" KUALA"}, True),  # over two line breaks (one of them CRLF), quotes kept
        ({"company": "C:\\TILL"}, True),  # a backslash in the text
        ({"date": None}, True),
        ({"company": ""}, True),  # the empty span
        ({"date": "31/12/2099"}, False),  # invented
        ({"company": "ACME SDN BHD\nNO. 5"}, False),  # a line break is read as one space
        ({"company": "ACME  SDN"}, False),  # not contiguous
        ({"total": "9.00"}, False),  # a number stays a number
        ({"kind": "ACME"}, False),  # an enum stays the enum, even for a span of the text
        ({"paid": "TOTAL"}, False),
    ],
)
def test_string_values_are_spans_of_the_source_and_the_rest_follows_the_schema(smollm2_tokenizer, values, allowed):
    assert _allows(smollm2_tokenizer, RECEIPT, _reply(**values)) is allowed


PLATE = {"type": "object", "properties": {"plate": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}-[A-Z]{2}$"},
                                         "code": {"type": "string", "pattern": "[0-9]/", "maxLength": 4}},
         "required": ["plate", "code"], "additionalProperties": False}


@pytest.mark.parametrize(
    ("plate", "code", "allowed"),
    [
        ("AB-123-CD", "1/2", True),
        ("ZZ-999-ZZ", "3/4", True),  # a span of "ZZ-999-ZZZ" that matches the pattern
        ("ZZ-999-ZZZ", "1/2", False),  # in the source, but not the pattern
        ("XY-123-CD", "1/2", False),  # the pattern, but not in the source
        ("AB-123-CD", "12", False),  # an unanchored pattern is a search: "[0-9]/" must occur
        ("AB-123-CD", "3/4 Z", False),  # maxLength
    ],
)
def test_a_pattern_or_a_length_bound_is_intersected_with_the_spans(smollm2_tokenizer, plate, code, allowed):
    source = "PLATE AB-123-CD OLD ZZ-999-ZZZ\nCODE 1/2 3/4 ZZ"
    assert _allows(smollm2_tokenizer, PLATE, jsonfmt.dumps({"plate": plate, "code": code}), source) is allowed


def test_the_layout_is_the_trained_one(smollm2_tokenizer):
    compact = json.dumps(json.loads(_reply()), separators=(",", ":"))
    assert _allows(smollm2_tokenizer, RECEIPT, _reply())
    assert not _allows(smollm2_tokenizer, RECEIPT, compact)


NESTED = {
    "type": "object",
    "$defs": {"field": {"type": "object", "properties": {"contents": {"type": ["string", "null"]}, "confidence_score": {"type": ["number", "null"]}},
                        "required": ["contents", "confidence_score"], "additionalProperties": False}},
    "properties": {
        "note": {"type": "string"},
        "Marque": {"$ref": "#/$defs/field"},
        "items": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "null"}]}, "maxItems": 2},
        "count": {"type": "integer"},
    },
    "required": ["Marque", "items"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("reply", "allowed"),
    [
        ({"Marque": {"contents": "ACME", "confidence_score": None}, "items": []}, True),  # optional keys left out
        ({"note": "JALAN", "Marque": {"contents": None, "confidence_score": 0.5}, "items": ["KUALA", None], "count": 3}, True),
        ({"Marque": {"contents": "ACME", "confidence_score": None}, "items": ["KUALA"], "count": 3}, True),
        ({"Marque": {"contents": "PEUGEOT", "confidence_score": None}, "items": []}, False),  # at depth: invented
        ({"Marque": {"contents": "ACME", "confidence_score": None}, "items": ["PARIS"]}, False),  # an item: invented
        ({"Marque": {"contents": "ACME", "confidence_score": None}, "items": ["A", "B", "C"]}, False),  # maxItems
        ({"items": [], "Marque": {"contents": "ACME", "confidence_score": None}}, False),  # schema order
        ({"Marque": {"contents": "ACME", "confidence_score": None}, "items": [], "extra": "ACME"}, False),
    ],
)
def test_nested_objects_refs_optional_keys_and_arrays(smollm2_tokenizer, reply, allowed):
    assert _allows(smollm2_tokenizer, NESTED, jsonfmt.dumps(reply)) is allowed


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "object", "properties": {"a": {"type": "object", "properties": {"d": {"type": "string", "format": "date"}}}}}, "'format' at /a/d"),
        ({"type": "object", "properties": {"a": {}}}, "type of the value at /a"),
        ({"type": "object", "properties": {"a": {"$ref": "#"}}}, "recursive schema"),
        ({"type": "object", "additionalProperties": {"type": "string"}}, "declares none"),
        ({"type": "array", "prefixItems": [{"type": "string"}]}, "prefixItems"),
    ],
)
def test_what_grounding_cannot_write_is_refused_naming_the_value(schema, message):
    with pytest.raises(SchemaError, match=message):
        grounded_grammar(schema, SOURCE)


def test_value_spans_point_at_the_text_line_breaks_read_as_spaces():
    reply = jsonfmt.dumps({"company": "ACME SDN BHD NO. 5", "date": "01/02/2018", "nested": {"x": ["KUALA LUMPUR DATE"]}, "n": 9, "e": ""})
    spans = value_spans(reply, SOURCE)
    assert spans == {"/company": [0, 18], "/date": [54, 64], "/nested/x/0": [36, 53], "/e": [0, 0]}
    assert SOURCE[0:18] == "ACME SDN BHD\nNO. 5"
    assert SOURCE[36:53] == "KUALA LUMPUR\nDATE"
    assert SOURCE[54:64] == "01/02/2018"
    assert value_spans(jsonfmt.dumps({"a": "NOT THERE"}), SOURCE) == {}
    norm, origin = normalized_source("a\r\nb\rc")
    assert (norm, origin) == ("a b c", [0, 1, 3, 4, 5])


def test_a_record_without_source_text_is_refused_naming_the_record_and_the_flag():
    image_only = Sample([{"role": "user", "content": [{"type": "image", "image": "r.png"}]}], where="data.jsonl:7")
    with pytest.raises(DataError, match=r"data.jsonl:7: --grounded needs a source text.*'source'.*--source-field"):
        grounded_constraint(RECEIPT, image_only, "source")
    own = Sample([{"role": "user", "content": "instructions"}], meta={"ocr": "ACME"})
    assert '"A", "C", "M", "E"' in grounded_constraint(RECEIPT, own, "ocr")  # the named field, not the prompt


INVENTED = "31/12/2099"
DATES = {"type": "object", "properties": {"date": {"type": "string"}}, "required": ["date"], "additionalProperties": False}


class _Steer:
    """A forward hook on the output layer that adds a large bias, at generation step k,
    to the k-th token of ``reply``: left alone, the model writes that reply."""

    def __init__(self, model, tokenizer, reply: str):
        self.ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
        self.step = 0
        model.get_output_embeddings().register_forward_hook(self)

    def __call__(self, module, args, out):
        if self.step < len(self.ids):
            out[..., -1, self.ids[self.step]] += 30.0
        self.step += 1
        return out


def test_a_model_pushed_to_invent_a_value_still_copies_a_span(smollm2_tokenizer, tmp_path):
    from model_garden.inference.predict import predict
    from model_garden.testing.models import tiny_text_model

    model = tiny_text_model(smollm2_tokenizer).eval()
    steer = _Steer(model, smollm2_tokenizer, jsonfmt.dumps({"date": INVENTED}))
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    source = "RECEIPT 0042\nDATE: 28/02/2016 11:05\nTOTAL 110.00"
    record = {"source": source, "messages": [{"role": "user", "content": "Give the date as JSON."}, {"role": "assistant", "content": '{"date": "28/02/2016"}'}]}
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(record) + "\n", encoding="utf-8")
    (tmp_path / "schema.json").write_text(json.dumps(DATES), encoding="utf-8")

    # The hook lives on this process's model object, so decode with it directly as predict's engine does.
    from model_garden.inference import loading as loading_module

    loaded = (model, smollm2_tokenizer)
    original = loading_module.load_for_inference
    loading_module.load_for_inference = lambda spec: loaded
    try:
        predict(folder, data, tmp_path / "plain.jsonl", max_new_tokens=24)
        steer.step = 0
        predict(folder, data, tmp_path / "grounded.jsonl", max_new_tokens=24, grounded=True)
    finally:
        loading_module.load_for_inference = original
    plain = json.loads((tmp_path / "plain.jsonl").read_text())
    grounded = json.loads((tmp_path / "grounded.jsonl").read_text())
    assert json.loads(plain["output"])["date"] == INVENTED  # the steering works: left alone it invents
    value = json.loads(grounded["output"])["date"]
    assert value and value in source.replace("\n", " ")
    start, end = grounded["spans"]["/date"]
    assert source[start:end].replace("\n", " ") == value
    assert grounded["grounded"] is True and "spans" not in plain
    assert set(grounded["confidence"]) == {"/date"} and 0.0 <= grounded["confidence"]["/date"] <= 1.0
