"""Schema-constrained decoding: the grammar enforces model-garden's JSON layout, masks are
as wide as the logits, batches match single runs, and bundled training targets pass.

Run: ``.venv/bin/python -m pytest tests/test_constrained.py -q``
"""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from model_garden import jsonfmt
from model_garden.cli.common import BUNDLED_EXAMPLE
from model_garden.data.jsonl import iter_records
from model_garden.inference.constrained import ConstrainedDecodingError, SchemaError, grammar_allows, json_schema_processor
from model_garden.data.sample import Sample
from model_garden.inference.generate import generate_batch
from model_garden.masking import ChatCodec

CAR = {
    "type": "object",
    "properties": {
        "Marque": {"type": ["string", "null"]},
        "Modèle": {"type": ["string", "null"]},
        "Immatriculation": {"type": ["string", "null"]},
        "Date de première immatriculation": {"type": ["string", "null"]},
        "Titulaire": {"type": ["string", "null"]},
        "VIN": {"type": ["string", "null"]},
    },
    "required": ["Marque", "Modèle", "Immatriculation", "Date de première immatriculation", "Titulaire", "VIN"],
    "additionalProperties": False,
}
# Every path through this schema is short, so even a random model must finish it.
BOUNDED = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "n": {"type": "integer", "minimum": 0, "maximum": 99},
        "colour": {"enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 2},
        "note": {"type": ["string", "null"], "maxLength": 6},
    },
    "required": ["ok", "n", "colour", "tags", "note"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def smollm2():
    from model_garden.models import load_model

    return load_model("smollm2-135m").eval()


def _prompt(tokenizer, text: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def _encoded(tokenizer, text: str) -> dict:
    """The prompt as generation takes it: encoded by the codec."""
    return ChatCodec(tokenizer).encode_prompt(Sample([{"role": "user", "content": text}]))


def test_mask_is_as_wide_as_the_logits(smollm2, smollm2_tokenizer):
    width = smollm2.get_output_embeddings().weight.shape[0]
    assert width == smollm2.config.vocab_size == 49152
    enc = smollm2_tokenizer(_prompt(smollm2_tokenizer, "hi"), return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        logits = smollm2(**enc).logits[:, -1]
    assert logits.shape[-1] == width
    proc = json_schema_processor(smollm2_tokenizer, CAR, width, 1)
    assert proc.rows.bitmask.shape == (1, width // 32)
    masked = proc(enc["input_ids"], logits.clone())
    allowed = torch.isfinite(masked[0]).nonzero().flatten().tolist()
    assert allowed and all(smollm2_tokenizer.decode([t]).startswith("{") for t in allowed)


def test_ids_beyond_the_tokenizer_are_never_allowed(smollm2_tokenizer):
    # Models often pad their embedding matrix past the tokenizer (Qwen: 151936 vs 151665).
    width = len(smollm2_tokenizer) + 100
    proc = json_schema_processor(smollm2_tokenizer, {"type": "object"}, width, 2)
    scores = proc(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, width))
    assert scores.shape == (2, width)
    assert torch.isinf(scores[:, len(smollm2_tokenizer) :]).all()
    assert torch.isfinite(scores[:, : len(smollm2_tokenizer)]).any(dim=1).all()


def _feed(proc, token_ids: list[int], width: int = 49152) -> torch.Tensor:
    """Run a processor as generate does: the prompt first, then one new token per call."""
    seq = torch.zeros(1, 3, dtype=torch.long)
    scores = proc(seq, torch.zeros(1, width))
    for token in token_ids:
        seq = torch.cat([seq, torch.tensor([[token]])], dim=1)
        scores = proc(seq, torch.zeros(1, width))
    return scores


def test_a_complete_reply_allows_only_eos_then_the_row_is_left_alone(smollm2_tokenizer):
    eos = smollm2_tokenizer.eos_token_id
    ids = smollm2_tokenizer(jsonfmt.dumps(dict.fromkeys(CAR["required"])), add_special_tokens=False)["input_ids"]
    proc = json_schema_processor(smollm2_tokenizer, CAR, 49152, 1)
    scores = _feed(proc, ids)
    assert torch.isfinite(scores[0]).nonzero().flatten().tolist() == [eos]
    assert proc.rows.done == [False]
    scores = _feed(json_schema_processor(smollm2_tokenizer, CAR, 49152, 1), [*ids, eos, eos])
    assert torch.isfinite(scores).all()  # finished rows are padded by generate, not masked


def test_a_token_outside_the_mask_raises(smollm2_tokenizer):
    proc = json_schema_processor(smollm2_tokenizer, CAR, 49152, 1)
    with pytest.raises(ConstrainedDecodingError, match="broke the grammar"):
        _feed(proc, smollm2_tokenizer("[1]", add_special_tokens=False)["input_ids"])


def test_logits_narrower_than_the_tokenizer_are_refused(smollm2_tokenizer):
    with pytest.raises(SchemaError, match="49000 logits"):
        json_schema_processor(smollm2_tokenizer, CAR, 49000, 1)


def test_grammar_enforces_the_jsonfmt_layout(smollm2_tokenizer):
    answer = {"Marque": "PEUGEOT", "Modèle": "208", "Immatriculation": None, "Date de première immatriculation": "12/03/2019", "Titulaire": "Hélène", "VIN": None}
    assert grammar_allows(smollm2_tokenizer, CAR, jsonfmt.dumps(answer))
    compact = json.dumps(answer, ensure_ascii=False, separators=(",", ":"))
    for other in (
        compact,
        json.dumps(answer, ensure_ascii=False, indent=2),
        json.dumps(answer, ensure_ascii=False, separators=(",", ": ")),
        json.dumps(answer, ensure_ascii=False, separators=(", ", ":")),
        " " + jsonfmt.dumps(answer),
        jsonfmt.dumps(answer) + "\n",
        jsonfmt.dumps(dict(reversed(list(answer.items())))),  # keys out of schema order
        jsonfmt.dumps(answer)[:-1],  # incomplete
    ):
        assert not grammar_allows(smollm2_tokenizer, CAR, other), other


def test_schema_cannot_loosen_the_layout(smollm2_tokenizer):
    loose = {**CAR, "x-guidance": {"whitespace_flexible": True, "item_separator": ",", "key_separator": ":"}}
    answer = dict.fromkeys(CAR["required"])
    assert grammar_allows(smollm2_tokenizer, loose, jsonfmt.dumps(answer))
    assert not grammar_allows(smollm2_tokenizer, loose, json.dumps(answer, separators=(",", ":")))


@pytest.mark.parametrize(
    "schema, message",
    [
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems"),
        ({"not": {"type": "string"}}, "not"),
        ({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}, "if"),
        ({"type": "string", "format": "made-up"}, "Unknown format: made-up"),
        ({"type": "string", "pattern": "(?=a)b"}, "look-around"),
        ({"type": "string", "minLength": 3, "maxLength": 2}, "Unsatisfiable"),
    ],
)
def test_unenforceable_schemas_raise(smollm2_tokenizer, schema, message):
    with pytest.raises(SchemaError, match="cannot be enforced") as info:
        json_schema_processor(smollm2_tokenizer, schema, 49152, 1)
    assert message in str(info.value)


def test_bundled_training_targets_pass_the_grammar(smollm2_tokenizer):
    from model_garden.data.schema import schema_for

    records = list(iter_records(BUNDLED_EXAMPLE))
    assert len(records) == 3
    for record in records:
        schema = schema_for(BUNDLED_EXAMPLE, record)  # the one its user prompt carries
        assert schema == CAR
        assert grammar_allows(smollm2_tokenizer, schema, record.reply), record.line
        assert record.reply == jsonfmt.dumps(json.loads(record.reply))
        relaid = json.dumps(json.loads(record.reply), ensure_ascii=False, separators=(",", ": "))
        assert not grammar_allows(smollm2_tokenizer, schema, relaid)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_untrained_model_still_writes_valid_json(smollm2_tokenizer, seed):
    from model_garden.testing.models import tiny_text_model

    random_lm = tiny_text_model(smollm2_tokenizer, seed=seed).eval()
    prompts = [_encoded(smollm2_tokenizer, text) for text in ("a", "a longer prompt than the first one", "x y")]
    replies = generate_batch(random_lm, smollm2_tokenizer, prompts, schemas=[BOUNDED] * 3, max_new_tokens=120)
    for text, new_tokens, _ in replies:
        obj = json.loads(text)
        jsonschema.validate(obj, BOUNDED)
        assert text == jsonfmt.dumps(obj)
        assert new_tokens < 120  # ended with EOS, not by running out of budget
    free = generate_batch(random_lm, smollm2_tokenizer, prompts[:1], max_new_tokens=20)
    with pytest.raises(json.JSONDecodeError):
        json.loads(free[0].text)


def test_batched_generation_matches_one_at_a_time(smollm2, smollm2_tokenizer):
    texts = ["Give me a car as JSON.", "Marque PEUGEOT, model 208, plate AB-123-CD, owner MARTIN Claire. JSON please.", "JSON"]
    prompts = [_encoded(smollm2_tokenizer, t) for t in texts]
    batched = generate_batch(smollm2, smollm2_tokenizer, prompts, schemas=[CAR] * 3, max_new_tokens=16)
    single = [generate_batch(smollm2, smollm2_tokenizer, [p], schemas=[CAR], max_new_tokens=16)[0] for p in prompts]
    assert [r[:2] for r in batched] == [r[:2] for r in single]
    for b, one in zip(batched, single):  # padding moves the logits only by float noise
        assert b.scores.keys() == one.scores.keys()
        for pointer, scores in b.scores.items():
            assert scores == pytest.approx(one.scores[pointer], rel=1e-3)
    assert all(r.text.startswith('{"Marque": ') for r in batched)


def test_each_row_follows_its_own_schema(smollm2, smollm2_tokenizer):
    other = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}
    prompts = [_encoded(smollm2_tokenizer, "Is it ok? Answer as JSON.")] * 2
    (car, _, _), (flag, n, _) = generate_batch(smollm2, smollm2_tokenizer, prompts, schemas=[CAR, other], max_new_tokens=12)
    assert car.startswith('{"Marque": ')
    assert flag in ('{"ok": true}', '{"ok": false}') and n < 12



def test_forms_training_targets_pass_the_grammar(smollm2_tokenizer, tmp_path):
    from model_garden.data.forms import make_forms
    from model_garden.data.schema import schema_for
    from model_garden.inference.grounding import grounded_grammar

    make_forms(tmp_path, n=20, seed=3)
    checked = 0
    for split in ("train", "val", "test"):
        path = tmp_path / "text" / f"{split}.jsonl"
        for record in iter_records(path):
            schema = schema_for(path, record)
            assert grammar_allows(smollm2_tokenizer, schema, record.reply), f"{path}:{record.line}"
            # Every value is copied from the transcription (its source), patterns included.
            grounded = grounded_grammar(schema, record.source_text())
            assert grammar_allows(smollm2_tokenizer, grounded, record.reply), f"{path}:{record.line} grounded"
            checked += 1
    assert checked == 20


def test_sroie_training_targets_pass_the_grammar(smollm2_tokenizer, tmp_path, shared_dir):
    from model_garden.data.schema import schema_for
    from model_garden.data.sroie import convert_sroie

    convert_sroie(shared_dir / "data" / "sroie", tmp_path)
    path = tmp_path / "all.jsonl"
    schema = schema_for(path)
    records = list(iter_records(path))
    assert len(records) == 500
    rejected = [r.line for r in records if not grammar_allows(smollm2_tokenizer, schema, r.reply)]
    # Only receipt 414, a test receipt whose gold date ("OCT 3, 2016") has a shape the
    # decoder's date pattern, written from the training golds, does not cover.
    ids = [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]
    assert [ids[line - 1] for line in rejected] == ["414"]
