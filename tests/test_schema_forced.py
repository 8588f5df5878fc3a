"""schema-forced: exactly the reply tokens the decoding grammar forces are masked."""

from __future__ import annotations

import json

import pytest

from model_garden.masking import MaskConfig, MaskingError, build_example
from model_garden.masking.schema_forced import forced_tokens

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": ["integer", "null"]},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
        "note": {"type": "string"},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}


def _trained(tok, ex) -> list[str]:
    return [tok.decode([i]) for i, label in zip(ex["input_ids"], ex["labels"]) if label != -100]


def test_forced_scaffolding_is_masked_and_decisions_kept(smollm2_tokenizer):
    tok = smollm2_tokenizer
    reply = '{"name": "Jo", "age": null, "tags": ["a", "b"]}'
    chat = [{"role": "user", "content": "Who?"}, {"role": "assistant", "content": reply}]
    ex = build_example(tok, chat, MaskConfig("schema-forced", schema=SCHEMA))
    trained = _trained(tok, ex)
    ids = tok(reply, add_special_tokens=False)["input_ids"]
    forced = forced_tokens(tok, SCHEMA, ids)
    pieces = [tok.decode([i]) for i in ids]
    # The opening and the first key are forced: nothing else may start this object.
    assert forced[0] and pieces[0] == '{"' and forced[1] and pieces[1] == "name"
    # Decisions stay trained: the value itself, null-or-integer, the enum choice,
    # and whether the optional "note" key comes (the closing brace).
    assert "Jo" in trained and " null" in trained and trained[-1] == "<|im_end|>"
    assert pieces[-1].endswith("}") and not forced[-1]
    # Exactly the unforced reply tokens plus the end of turn are trained.
    assert len(trained) == int((~forced).sum()) + 1
    assert ex["json_found"]


def test_reply_the_grammar_rejects_is_trained_whole(smollm2_tokenizer):
    tok = smollm2_tokenizer
    chat = [{"role": "user", "content": "Who?"}, {"role": "assistant", "content": 'Sure: {"name": "Jo", "age": 3, "tags": []}'}]
    ex = build_example(tok, chat, MaskConfig("schema-forced", schema=SCHEMA))
    full = build_example(tok, chat, MaskConfig("none"))
    assert ex["labels"] == full["labels"] and not ex["json_found"]


def test_schema_forced_needs_a_schema(smollm2_tokenizer):
    chat = [{"role": "user", "content": "Who?"}, {"role": "assistant", "content": '{"name": "Jo"}'}]
    with pytest.raises(MaskingError, match="example 3: --mask-strategy schema-forced needs the reply schema"):
        build_example(smollm2_tokenizer, chat, MaskConfig("schema-forced"), example=3)


def test_per_example_schema_wins_and_structural_weight_applies(smollm2_tokenizer):
    tok = smollm2_tokenizer
    chat = [{"role": "user", "content": "Who?"}, {"role": "assistant", "content": json.dumps({"name": "Jo", "age": 4, "tags": []})}]
    ex = build_example(tok, chat, MaskConfig("schema-forced", structural_weight=0.25), schema=SCHEMA)
    weights = [w for w, label in zip(ex["loss_weights"], ex["labels"]) if label != -100]
    assert 0.25 in weights and 1.0 in weights
    assert all(label != -100 for label, c in zip(ex["labels"], ex["token_classes"]) if 0 < c < 10)
