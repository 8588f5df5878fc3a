"""Per-value confidence: token probabilities under the grammar, forced tokens left out,
attributed to leaf values by their characters, aggregated, calibrated by ``predict``.

Run: ``.venv/bin/python -m pytest tests/test_confidence.py -q``
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from model_garden.inference.calibration_map import CalibrationMap
from model_garden.inference.confidence import GuidedRows, TokenLog, fill_confidence_scores, value_scores
from model_garden.inference.pointers import field_confidences, leaves, metric_field

# A hand-built reply, token by token: (text, probability under the grammar, forced).
# The reply is {"a": "xy", "n": 12, "b": null} and EOS.
TOKENS = [
    ('{"', 1.0, True),
    ("a", 1.0, True),
    ('": "', 1.0, True),  # holds the value's opening quote, but the grammar forced it
    ("x", 0.5, False),
    ('y"', 0.8, False),  # the closing quote: where the value stops is a decision
    (', "n": ', 1.0, True),
    ("12", 0.9, False),
    (', "', 0.6, False),  # the comma ends the number: it counts for /n
    ('b": ', 1.0, True),
    ("null", 0.7, False),
    ("}", 1.0, True),
    ("<eos>", 1.0, True),
]
RAW_PENALTY = 0.5  # raw probability = this x the grammar's, per token


def _log() -> tuple[TokenLog, dict[int, bytes]]:
    log, pieces = TokenLog(), {}
    for i, (text, p, forced) in enumerate(TOKENS):
        log.tokens.append(i)
        log.logp.append(math.log(p))
        log.raw_logp.append(math.log(p * RAW_PENALTY))
        log.forced.append(forced)
        pieces[i] = text.encode()
    return log, pieces


def test_value_scores_on_a_hand_built_reply():
    log, pieces = _log()
    eos = {len(TOKENS) - 1}
    scores = value_scores(log, pieces.__getitem__, eos)
    assert list(scores) == ["/a", "/n", "/b"]
    a, n, b = scores["/a"], scores["/n"], scores["/b"]
    # /a: x (0.5) and y" (0.8); the forced '": "' is left out although it writes the quote
    assert a["free_tokens"] == 2
    assert a["product"] == pytest.approx(0.4) and a["min"] == pytest.approx(0.5) and a["geomean"] == pytest.approx(0.4 ** 0.5)
    assert a["raw_product"] == pytest.approx(0.4 * RAW_PENALTY**2)
    # /n: 12 (0.9) and the comma after it (0.6)
    assert n["free_tokens"] == 2 and n["product"] == pytest.approx(0.54) and n["min"] == pytest.approx(0.6)
    # /b: null (0.7)
    assert b["free_tokens"] == 1 and b["product"] == pytest.approx(0.7) == b["geomean"]


def test_a_value_the_grammar_wrote_alone_is_certain_and_a_cut_reply_has_no_scores():
    log, pieces = _log()
    log.forced = [True] * len(TOKENS)
    assert all(s["product"] == 1.0 and s["free_tokens"] == 0 for s in value_scores(log, pieces.__getitem__, {11}).values())
    cut = TokenLog(log.tokens[:5], log.logp[:5], log.raw_logp[:5], log.forced[:5])
    assert value_scores(cut, pieces.__getitem__, {11}) == {}


def test_guided_rows_renormalise_over_the_allowed_tokens_and_mark_forced_ones(smollm2_tokenizer):
    from model_garden.grammar import matcher

    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}
    vocab, eos = 49152, smollm2_tokenizer.eos_token_id
    reply = smollm2_tokenizer('{"ok": true}', add_special_tokens=False)["input_ids"] + [eos]
    rows = GuidedRows([matcher(smollm2_tokenizer, schema, vocab_size=vocab), None], vocab, [eos])
    rng = np.random.default_rng(0)
    forced = []
    for step, token in enumerate(reply):
        logits = rng.normal(size=(2, vocab)).astype(np.float32)
        raw = logits.copy()
        blocked = rows.mask(logits)
        assert blocked[1].sum() == 0  # the free row is untouched
        allowed = np.flatnonzero(~blocked[0])
        assert token in allowed
        forced.append(len(allowed) == 1)
        rows.consume([token, 7])
        want = raw[0, token] - np.log(np.exp(raw[0, allowed].astype(np.float64)).sum())
        assert rows.logs[0].logp[step] == pytest.approx(want, abs=1e-5)
        assert rows.logs[0].raw_logp[step] == pytest.approx(raw[0, token] - np.log(np.exp(raw[0].astype(np.float64)).sum()), abs=1e-5)
        assert rows.logs[1].logp[step] == pytest.approx(rows.logs[1].raw_logp[step])  # no grammar: the same distribution
    assert rows.logs[0].forced == forced and forced[-1] and not all(forced)  # EOS after "}" is forced; true/false is not
    assert rows.done == [True, False]
    rows.mask(rng.normal(size=(2, vocab)).astype(np.float32))
    rows.close([eos, 9])  # the last step's token, chosen after the last mask
    assert rows.done == [True, True] and rows.logs[1].tokens[-1] == 9 and len(rows.logs[0].tokens) == len(reply)


def test_pointers_and_fields():
    text = '{"Marque": {"contents": "A/B", "confidence_score": null}, "items": ["x", {"k": 1}], "a~b": {}}'
    found = {leaf.pointer: (leaf.value, text[leaf.start : leaf.end]) for leaf in leaves(text)}
    assert found == {
        "/Marque/contents": ("A/B", '"A/B"'),
        "/Marque/confidence_score": (None, "null"),
        "/items/0": ("x", '"x"'),
        "/items/1/k": (1, "1"),
        "/a~0b": ({}, "{}"),
    }
    assert [metric_field(p) for p in found] == ["Marque.contents", "Marque.confidence_score", "items", "items", "a~b"]
    assert field_confidences({"/items/0": 0.9, "/items/1/k": 0.4, "/Marque/contents": 0.8}) == {"items": 0.4, "Marque.contents": 0.8}
    with pytest.raises(ValueError):
        leaves('{"a": ')


def test_confidence_score_beside_contents_is_filled():
    reply = {"Marque": {"contents": "PEUGEOT", "confidence_score": None}, "Modèle": {"contents": None, "confidence_score": None}, "n": 3}
    filled = fill_confidence_scores(reply, {"/Marque/contents": 0.97, "/Modèle/contents": 0.4, "/n": 0.5})
    assert filled == {"Marque": {"contents": "PEUGEOT", "confidence_score": 0.97}, "Modèle": {"contents": None, "confidence_score": 0.4}, "n": 3}


def test_predict_writes_confidence_and_applies_the_models_calibration_map(tiny_model_dir, tmp_path):
    import shutil

    from model_garden.inference.predict import predict

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "name": {"type": "string", "maxLength": 4}},
              "required": ["ok", "name"], "additionalProperties": False}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "ok?"}, {"role": "assistant", "content": '{"ok": true, "name": "a"}'}]}) + "\n")

    predict(model, data, tmp_path / "raw.jsonl", max_new_tokens=24)
    raw = json.loads((tmp_path / "raw.jsonl").read_text())
    assert set(raw["confidence"]) == {"/ok", "/name"}
    assert all(raw["confidence"][p] == raw["scores"][p]["product"] for p in raw["confidence"])  # no map: the product

    CalibrationMap("min", [0.0, 1.0], [0.25, 0.75]).save(model / "calibration.json")
    predict(model, data, tmp_path / "cal.jsonl", max_new_tokens=24)
    cal = json.loads((tmp_path / "cal.jsonl").read_text())
    assert cal["output"] == raw["output"]
    assert cal["confidence"] == {p: pytest.approx(0.25 + 0.5 * s["min"]) for p, s in raw["scores"].items()}
    assert json.loads((tmp_path / "cal.jsonl.meta.json").read_text())["calibration"] == str(model / "calibration.json")
    assert "needs_review" not in cal

    # --review-at: the values below the map's threshold for that precision, per row
    low = min(cal["confidence"], key=cal["confidence"].get)
    threshold = max(cal["confidence"].values())  # only the most confident value is accepted
    CalibrationMap("min", [0.0, 1.0], [0.25, 0.75], thresholds={"0.95": threshold, "0.99": None}).save(model / "calibration.json")
    predict(model, data, tmp_path / "review.jsonl", max_new_tokens=24, review_at=0.95)
    review = json.loads((tmp_path / "review.jsonl").read_text())
    assert review["needs_review"] == [p for p, c in review["confidence"].items() if c < threshold] and low in review["needs_review"]
    assert json.loads((tmp_path / "review.jsonl.meta.json").read_text())["review_at"] == {"precision": 0.95, "threshold": threshold}
    predict(model, data, tmp_path / "all.jsonl", max_new_tokens=24, review_at=0.99)
    assert json.loads((tmp_path / "all.jsonl").read_text())["needs_review"] == list(raw["confidence"])
    with pytest.raises(ValueError, match="--review-at 0.9: the calibration map has thresholds for 0.95, 0.99 only"):
        predict(model, data, tmp_path / "nope.jsonl", max_new_tokens=24, review_at=0.9)
    with pytest.raises(ValueError, match="--review-at needs a calibration map"):
        predict(tiny_model_dir, data, tmp_path / "nope.jsonl", max_new_tokens=24, review_at=0.95)
    assert not (tmp_path / "nope.jsonl").exists()


def test_a_reply_that_is_no_json_object_needs_review_whole():
    from model_garden.inference.confidence import Reply
    from model_garden.inference.predict import prediction_row
    from model_garden.data.sample import Sample

    cmap = CalibrationMap("min", [0.0, 1.0], [0.0, 1.0], thresholds={"0.95": 0.5})
    sample = Sample([{"role": "user", "content": "ok?"}], line=3)
    cut = prediction_row(sample, Reply('{"ok": tr', 24, {}), constrained=True, source_field=None, calibration=cmap, review_at=0.95)
    assert cut["needs_review"] == [""]  # RFC 6901: the whole document
    whole = prediction_row(sample, Reply('{"ok": true}', 5, {"/ok": {"product": 0.9, "min": 0.4, "geomean": 0.9, "raw_product": 0.9, "free_tokens": 1}}),
                           constrained=True, source_field=None, calibration=cmap, review_at=0.95)
    assert whole["confidence"] == {"/ok": 0.4} and whole["needs_review"] == ["/ok"]
