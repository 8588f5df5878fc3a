"""Hand-checked cases of the loss-mask engine: JSON classes, fences and prose, fallbacks,
templates (default system prompt, trimming, rewriting), bad input, truncation.

Run: ``python -m pytest tests/test_masking_unit.py -q``
"""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from model_garden.masking import MaskConfig, MaskingError, build_example, json_spans
from model_garden.masking.tokens import _tail_spans, _token_bytes, token_spans
from model_garden.masking.inspect import MaskStats
from model_garden.testing import qwen_tokenizer, sentencepiece_tokenizer

REPLY = '{"name": "John", "age": 30}'


def chat(reply: str = REPLY, **extra) -> list[dict]:
    return [{"role": "user", "content": "John is 30."}, {"role": "assistant", "content": reply, **extra}]


def trained_text(tok, ex: dict) -> str:
    ids = [i for i, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100]
    return tok.decode(ids)


def from_first_trained(ex: dict) -> tuple[list, list]:
    first = next(i for i, lab in enumerate(ex["labels"]) if lab != -100)
    return ex["labels"][first:], ex["loss_weights"][first:]


def spans_by_kind(text: str) -> list[tuple[str, str]]:
    return [(text[s:e], kind) for s, e, kind in json_spans(text)]


# ---- json_spans -------------------------------------------------------------------


def test_json_spans_every_class():
    assert json_spans('{"a": [1, "x"], "b": true}') == [
        (0, 1, "punct"), (1, 2, "key_quote"), (2, 3, "key"), (3, 4, "key_quote"), (4, 5, "punct"),
        (5, 6, "whitespace"), (6, 7, "punct"), (7, 8, "number"), (8, 9, "punct"), (9, 10, "whitespace"),
        (10, 11, "value_quote"), (11, 12, "string"), (12, 13, "value_quote"), (13, 15, "punct"),
        (15, 16, "whitespace"), (16, 17, "key_quote"), (17, 18, "key"), (18, 19, "key_quote"),
        (19, 20, "punct"), (20, 21, "whitespace"), (21, 25, "literal"), (25, 26, "punct"),
    ]  # fmt: skip


def test_json_spans_escapes_numbers_and_inner_whitespace():
    text = '{"k\\"ey" : "a b\\n\\u00e9", "n": -1.5e+3, "z": null, "e": ""}'
    assert spans_by_kind(text) == [
        ("{", "punct"), ('"', "key_quote"), ('k\\"ey', "key"), ('"', "key_quote"), (" ", "whitespace"),
        (":", "punct"), (" ", "whitespace"), ('"', "value_quote"), ("a b\\n\\u00e9", "string"),
        ('"', "value_quote"), (",", "punct"), (" ", "whitespace"), ('"', "key_quote"), ("n", "key"),
        ('"', "key_quote"), (":", "punct"), (" ", "whitespace"), ("-1.5e+3", "number"), (",", "punct"),
        (" ", "whitespace"), ('"', "key_quote"), ("z", "key"), ('"', "key_quote"), (":", "punct"),
        (" ", "whitespace"), ("null", "literal"), (",", "punct"), (" ", "whitespace"), ('"', "key_quote"),
        ("e", "key"), ('"', "key_quote"), (":", "punct"), (" ", "whitespace"), ('""', "value_quote"), ("}", "punct"),
    ]  # fmt: skip


def test_json_spans_indented_layout():
    assert spans_by_kind('[\n  false,\n  {}\n]') == [
        ("[", "punct"), ("\n  ", "whitespace"), ("false", "literal"), (",", "punct"),
        ("\n  ", "whitespace"), ("{}", "punct"), ("\n", "whitespace"), ("]", "punct"),
    ]  # fmt: skip


def test_json_spans_fence_and_prose():
    fenced = '```json\n{"a": 1}\n```'
    assert spans_by_kind(fenced)[0] == ("```json\n", "other")
    assert spans_by_kind(fenced)[-1] == ("\n```", "other")
    assert ("a", "key") in spans_by_kind(fenced)
    prose = 'Step [1] is done. Here it is: {"a": 1}'
    assert spans_by_kind(prose)[0] == ("Step [1] is done. Here it is: ", "other")  # the longest document wins
    assert spans_by_kind(prose)[-2:] == [("1", "number"), ("}", "punct")]


def test_json_spans_without_json():
    assert json_spans("No receipt here.") == [(0, 16, "other")]
    assert json_spans('{"a": 1') == [(0, 7, "other")]
    assert json_spans("") == []


# ---- the mask on SmolLM2 ------------------------------------------------------------


def test_default_system_prompt_is_masked(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ex = build_example(tok, chat(), MaskConfig(strategy="none"))
    text = tok.decode(ex["input_ids"])
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")  # injected by the template
    assert trained_text(tok, ex) == REPLY + "<|im_end|>"


@pytest.mark.parametrize(
    ("strategy", "trained"),
    [
        ("none", '{"name": "John", "age": 30}<|im_end|>'),
        # Tokens mix classes ('":', '",', ' "'); one trained character trains the token.
        # The ' ' token before 30 chooses a number and the '}' ends it: both trained.
        ("conservative", '{"name": "John", "age": 30}<|im_end|>'),
        ("moderate", ' "John", 30}<|im_end|>'),
        ("aggressive", ' "John", 30}<|im_end|>'),
    ],
)
def test_strategies_on_smollm2(smollm2_tokenizer, strategy, trained):
    ex = build_example(smollm2_tokenizer, chat(), MaskConfig(strategy=strategy))
    assert trained_text(smollm2_tokenizer, ex) == trained
    assert ex["json_found"]


def test_custom_pattern_trains_its_group(smollm2_tokenizer):
    reply = '{"Marque": {"contents": "PEUGEOT", "confidence_score": null}}'
    cfg = MaskConfig(strategy="custom", semantic_patterns=(r'"contents":\s*"([^"]*)"',))
    ex = build_example(smollm2_tokenizer, chat(reply), cfg)
    assert trained_text(smollm2_tokenizer, ex) == "PEUGEOT<|im_end|>"


def test_structural_weight_keeps_labels(smollm2_tokenizer):
    ex = build_example(smollm2_tokenizer, chat(), MaskConfig(strategy="aggressive", structural_weight=0.3))
    weights = np.asarray(ex["loss_weights"])
    labels = np.asarray(ex["labels"])
    assert trained_text(smollm2_tokenizer, ex) == REPLY + "<|im_end|>"  # every reply token keeps its label
    assert sorted(set(weights[labels != -100].round(3))) == [0.3, 1.0]
    assert (weights[labels == -100] == 0).all()
    stats = MaskStats()
    stats.add(ex)
    d = stats.as_dict()  # down-weighted tokens are reported as such, not as trained
    assert "key" in d["weighted"] and "key" not in d["trained"]
    assert "string" in d["trained"] and "string" not in d["weighted"]
    assert d["trained_tokens"] + d["weighted_tokens"] == int((labels != -100).sum())
    assert [c.header for c in stats.table().columns][-1] == "% weighted"


def test_fallback_when_reply_is_not_json(smollm2_tokenizer):
    stats = MaskStats()
    for reply in ("I could not read the receipt.", '{"total": 9.00'):  # prose; truncated (invalid) JSON
        ex = build_example(smollm2_tokenizer, chat(reply), MaskConfig(strategy="aggressive"))
        assert not ex["json_found"]
        assert trained_text(smollm2_tokenizer, ex) == reply + "<|im_end|>"  # the whole reply, as `none`
        stats.add(ex)
    stats.add(build_example(smollm2_tokenizer, chat(), MaskConfig(strategy="aggressive")))
    assert stats.fallbacks == 2
    assert stats.warnings() == ["2 example(s) had no parseable JSON in the reply; their whole reply is trained"]


def test_fenced_and_prose_replies(smollm2_tokenizer):
    reply = 'Here you go:\n```json\n{"a": "b"}\n```'
    ex = build_example(smollm2_tokenizer, chat(reply), MaskConfig(strategy="aggressive"))
    assert ex["json_found"]
    assert trained_text(smollm2_tokenizer, ex) == ' "b"}<|im_end|>'  # '"}' holds a value quote
    ex = build_example(smollm2_tokenizer, chat(reply), MaskConfig(strategy="conservative"))
    assert trained_text(smollm2_tokenizer, ex).startswith("Here you go:\n```json\n")  # prose is `other`: trained


def multi_turn() -> list[dict]:
    return [
        {"role": "system", "content": "Extract."},
        {"role": "user", "content": "A is 1."},
        {"role": "assistant", "content": '{"a": 1}'},
        {"role": "user", "content": "B is 2."},
        {"role": "assistant", "content": '{"b": 2}'},
    ]


def test_multi_turn_all_and_last(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ex = build_example(tok, multi_turn(), MaskConfig(train_on="all_assistant"))
    assert trained_text(tok, ex) == '{"a": 1}<|im_end|>{"b": 2}<|im_end|>'
    ex = build_example(tok, multi_turn(), MaskConfig(train_on="last_assistant"))
    assert trained_text(tok, ex) == '{"b": 2}<|im_end|>'


def test_message_weight_zero_is_not_trained(smollm2_tokenizer):
    messages = multi_turn()
    messages[4]["weight"] = 0
    ex = build_example(smollm2_tokenizer, messages, MaskConfig())
    assert trained_text(smollm2_tokenizer, ex) == '{"a": 1}<|im_end|>'


def test_truncation_leaves_nothing_trained(smollm2_tokenizer):
    ex = build_example(smollm2_tokenizer, chat(), MaskConfig(), max_length=10)
    assert ex["truncated"] and len(ex["input_ids"]) == len(ex["labels"]) == len(ex["loss_weights"]) == 10
    assert set(ex["labels"]) == {-100}
    stats = MaskStats()
    stats.add(ex)
    assert stats.dropped == 1


# ---- templates that change the reply ----------------------------------------------------


def spm_with_template(template: str):
    tok = sentencepiece_tokenizer()
    tok.chat_template = template
    return tok


def test_trimming_template_falls_back_to_search():
    tok = spm_with_template(
        "{% for m in messages %}{{ bos_token if m['role'] == 'user' }}[{{ m['role'] }}] {{ m['content'] | trim }} {{ eos_token if m['role'] == 'assistant' }}{% endfor %}"
    )
    ex = build_example(tok, chat('  {"a": 1}\n\n'), MaskConfig())
    assert trained_text(tok, ex) == '{"a": 1} </s>'


def test_template_that_rewrites_the_reply_is_refused():
    tok = spm_with_template("{% for m in messages %}{{ m['role'] }}: {{ m['content'] | upper }}{{ eos_token }}{% endfor %}")
    with pytest.raises(MaskingError, match=r"^example 7: the chat template changed assistant reply 0"):
        build_example(tok, chat(), MaskConfig(), example=7)


_FLAGGING = (
    "{% for m in messages %}{{ bos_token if m['role'] == 'user' }}[{{ m['role'] }}]"
    "{% if m['role'] == 'user' and 'urgent' in m['content'] %}(!){% endif %} {{ m['content'] }}"
    "{{ ' ' + eos_token if m['role'] == 'assistant' }}{% endfor %}"
)


@pytest.mark.parametrize("prompt", ["urgent: John is 30.", "urgent \ue0009\ue001 John is 30."])
def test_template_that_reads_the_prompt_gets_exact_spans(prompt):
    # The all-sentinel skeleton lacks "(!)"; sentinels in the replies only then find
    # them, also when the prompt holds text shaped like a sentinel.
    tok = spm_with_template(_FLAGGING)
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": REPLY}]
    ex = build_example(tok, messages, MaskConfig(strategy="aggressive"))
    assert tok.decode(ex["input_ids"]).startswith("<s>[user](!) urgent")
    plain = build_example(spm_with_template(_FLAGGING.replace("(!)", "")), messages, MaskConfig(strategy="aggressive"))
    assert trained_text(tok, ex) == '"John", 30} </s>'
    assert from_first_trained(ex) == from_first_trained(plain)


def test_a_chat_shape_is_rendered_once(smollm2_tokenizer, monkeypatch):
    from model_garden.masking import render

    calls = []
    template = render._template
    monkeypatch.setattr(render, "_template", lambda *a, **k: calls.append(a[1]) or template(*a, **k))
    first = [{"role": "system", "content": "Be exact."}, *chat('{"shape": "once"}')]
    build_example(smollm2_tokenizer, first, MaskConfig())
    calls.clear()
    ex = build_example(smollm2_tokenizer, [first[0], *chat('{"b": 2}')], MaskConfig(strategy="aggressive"))
    assert len(calls) == 1 and calls[0][-1]["content"] == '{"b": 2}'  # the real chat only
    assert trained_text(smollm2_tokenizer, ex) == " 2}<|im_end|>"


def test_a_changed_template_is_used():
    tok = spm_with_template("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{{ eos_token }}{% endfor %}")
    build_example(tok, chat(), MaskConfig())
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}{{ eos_token }}{% endfor %}"
    ex = build_example(tok, chat(), MaskConfig())
    assert tok.decode(ex["input_ids"]).startswith("<user> John is 30.")
    assert trained_text(tok, ex) == REPLY + "</s>"


# ---- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([{"role": "user", "content": "hi"}], r"^line 3: no assistant message to train on"),
        ([{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "{}"}], r"^line 3, message 0: unknown role 'robot'"),
        (chat("   "), r"^line 3, message 1: the assistant reply is empty"),
        ([{"role": "user", "content": [{"type": "audio", "audio": "x.wav"}]}, {"role": "assistant", "content": "{}"}],
         r"^line 3, message 0, part 0: unsupported content type 'audio'"),
        ([{"role": "user", "content": [{"type": "image", "image": "x.png"}]}, {"role": "assistant", "content": "{}"}],
         r"^line 3, message 0: has image content but the model is text-only"),
        ([{"role": "user", "content": 42}, {"role": "assistant", "content": "{}"}], r"^line 3, message 0: content must be a string"),
        ([], r"^line 3: 'messages' must be a non-empty list"),
    ],
)  # fmt: skip
def test_bad_input_names_the_example(smollm2_tokenizer, messages, error):
    with pytest.raises(MaskingError, match=error):
        build_example(smollm2_tokenizer, messages, MaskConfig(), example="line 3")


def test_bad_config_names_the_flag():
    with pytest.raises(ValueError, match="--mask-strategy must be one of"):
        MaskConfig(strategy="greedy")
    with pytest.raises(ValueError, match="--structural-weight must be in"):
        MaskConfig(structural_weight=2)
    with pytest.raises(ValueError, match="needs at least one --semantic-patterns"):
        MaskConfig(strategy="custom")


# ---- decoding relations of the other families -------------------------------------------


def test_qwen_normalises_to_nfc_and_masks_the_original_text():
    tok = qwen_tokenizer()
    reply = '{"ville": "Montre\u0301al"}'  # decomposed é
    ex = build_example(tok, chat(reply), MaskConfig(strategy="aggressive"))
    assert tok.decode(ex["input_ids"]) == unicodedata.normalize("NFC", tok.apply_chat_template(chat(reply), tokenize=False))
    assert trained_text(tok, ex) == ' "Montréal"}<|im_end|>'


def test_sentencepiece_decodes_a_literal_metaspace_as_space():
    tok = sentencepiece_tokenizer()
    reply = '{"a": "x\u2581y"}'
    ex = build_example(tok, chat(reply), MaskConfig(strategy="aggressive"))
    text = tok.apply_chat_template(chat(reply), tokenize=False)
    assert tok.decode(ex["input_ids"]) == text.replace("\u2581", " ")
    assert trained_text(tok, ex) == '"x y"} </s>'


# ---- character offsets from token bytes (byte-level BPE) ----------------------------------


@pytest.mark.parametrize("family", ["smollm2", "qwen"])
@pytest.mark.parametrize("where", ["reply", "text"])
def test_byte_level_offsets_agree_with_the_tokenizers(smollm2_tokenizer, family, where):
    tok = smollm2_tokenizer if family == "smollm2" else qwen_tokenizer()
    reply = '{"ville": "Montréal 😀 中文", "n": 3}'
    text = tok.apply_chat_template(chat(reply), tokenize=False)
    enc = tok.backend_tokenizer.encode(text, add_special_tokens=False)
    start = text.index(reply) if where == "reply" else 0
    lo, starts, ends = _tail_spans(_token_bytes(tok), text, enc.ids, start)
    assert lo == (0 if where == "text" else max(0, enc.char_to_token(start) - 8))
    # The tokenizer's own offsets leave out a token's leading space; token_spans closes
    # that gap, and then both agree token for token, multi-byte characters included.
    theirs = token_spans(np.asarray(enc.offsets), len(text))
    assert starts.tolist() == theirs[0][lo:].tolist() and ends.tolist() == theirs[1][lo:].tolist()


def test_offsets_come_from_the_tokenizer_when_bytes_do_not_spell_the_text(smollm2_tokenizer):
    qwen = qwen_tokenizer()
    decomposed = qwen.apply_chat_template(chat('{"ville": "Montre\u0301al"}'), tokenize=False)  # Qwen normalises to NFC
    ids = qwen.backend_tokenizer.encode(decomposed, add_special_tokens=False).ids
    assert _tail_spans(_token_bytes(qwen), decomposed, ids, decomposed.index("{")) is None
    # U+40000's lead byte 0xF1 is not in SmolLM2's byte alphabet: the tokenizer drops it.
    dropped = smollm2_tokenizer.apply_chat_template(chat('{"a": "x\U00040000y"}'), tokenize=False)
    ids = smollm2_tokenizer.backend_tokenizer.encode(dropped, add_special_tokens=False).ids
    assert _tail_spans(_token_bytes(smollm2_tokenizer), dropped, ids, dropped.index("{")) is None
    assert _token_bytes(sentencepiece_tokenizer()) is None  # not byte-level at all
    ex = build_example(smollm2_tokenizer, chat('{"a": "x\U00040000y"}'), MaskConfig(strategy="aggressive"))
    assert trained_text(smollm2_tokenizer, ex) == ' "x\ufffd\ufffd\ufffdy"}<|im_end|>'  # its three continuation bytes
