"""Property tests of the loss-mask engine over generated JSON replies in realistic chats,
on three tokenizer families (SmolLM2's and Qwen2.5's byte-level BPE, a Llama-style
SentencePiece), for every strategy, ``train_on`` and structural weight.

The expected mask is computed here without the engine's internals: reply spans are
found in the template's own rendering, character classes come from ``json_spans``, and
each token's characters come from walking its *bytes* through the UTF-8 encoding of the
text (not from the tokenizer's offsets, which the engine uses).

Documented relations where decoding is not the identity:
  * Qwen2.5 normalises to NFC: ``decode(ids) == NFC(text)``; generated text is NFC.
  * SentencePiece writes spaces as ``▁``, so a literal ``▁`` decodes as a space;
    generated text holds no ``▁``.
  * SmolLM2's byte alphabet lacks 21 bytes (0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, the lead
    bytes 0xF1 and 0xF2 of planes 4-12, and bytes UTF-8 never uses); characters that need
    them are silently dropped by the tokenizer. Generated text holds no control,
    unassigned or private-use characters, so it avoids them.

Run: ``python -m pytest tests/test_masking_properties.py -q``
"""

from __future__ import annotations

import functools
import importlib
import json
import re
import unicodedata
import unittest.mock

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from transformers.convert_slow_tokenizer import bytes_to_unicode

from model_garden.masking import MaskConfig, build_example, json_spans, render_prompt
from model_garden.models import load_processing
from model_garden.testing import qwen_tokenizer, sentencepiece_tokenizer

CUSTOM = r':\s*("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)'
CONFIGS = [
    MaskConfig(strategy=s, semantic_patterns=(CUSTOM,) if s == "custom" else (), train_on=t, structural_weight=w)
    for s in ("none", "conservative", "moderate", "aggressive", "custom")
    for t in ("all_assistant", "last_assistant")
    for w in (0.0, 0.3)
]
TRAINED_KINDS = {
    "conservative": {"key_quote", "key", "value_quote", "string", "number", "literal", "other"},
    "moderate": {"value_quote", "string", "number", "literal", "other"},
    "aggressive": {"value_quote", "string", "number", "literal"},
}
_BYTE_DECODER = {c: b for b, c in bytes_to_unicode().items()}
_SPM_BYTE = re.compile(r"<0x([0-9A-F]{2})>")


@functools.cache
def family_tokenizer(family: str):
    return {"smollm2": lambda: load_processing("smollm2-135m"), "qwen": qwen_tokenizer, "spm": sentencepiece_tokenizer}[family]()


# ---- generated chats ---------------------------------------------------------------

_chars = st.characters(exclude_categories=("Cs", "Cc", "Cn", "Co"), exclude_characters="\u2581")
_nfc = st.text(_chars, max_size=12).map(lambda s: unicodedata.normalize("NFC", s))
_words = st.sampled_from(["total", "Montant TTC", "déjà vu", "naïve café", "😀 ok", "a\"b", "back\\slash", "tab\there", "", "中文", "x" * 30])
_strings = st.one_of(_nfc, _words)
_numbers = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -0.0, 1e-07, -2.5e21, 6.02e23, 3.14]),
)
_leaves = st.one_of(st.none(), st.booleans(), _numbers, _strings)
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_strings, inner, max_size=3)),
    max_leaves=8,
)
documents = st.one_of(st.dictionaries(_strings, _values, min_size=1, max_size=4), st.lists(_values, min_size=1, max_size=3))
layouts = st.sampled_from(
    [dict(separators=(",", ":")), dict(), dict(indent=2), dict(separators=(" ,", " : ")), dict(ensure_ascii=False), dict(ensure_ascii=False, indent=2)]
)
wrappers = st.sampled_from(["{}", "```json\n{}\n```", "Here is the extracted data:\n{}", "Voilà le résultat : {}"])
prompts = st.one_of(_nfc.filter(str.strip), st.sampled_from(["Extract the fields as JSON.", "Quel est le total ?", "OCR:\nTOTAL 9.00\nDATE 25/12/2018"]))


@st.composite
def chats(draw):
    """A system prompt (or none), then one or two user/assistant rounds with JSON replies."""
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(st.sampled_from(["You extract data.", "Réponds en JSON."]))})
    for _ in range(draw(st.integers(1, 2))):
        reply = draw(wrappers).replace("{}", json.dumps(draw(documents), **draw(layouts)), 1)
        messages += [{"role": "user", "content": draw(prompts).strip()}, {"role": "assistant", "content": reply}]
    return messages


# ---- the expected mask, computed independently ----------------------------------------


def token_bytes(tok, ids: list[int], spm: bool) -> list[bytes]:
    """Each token's bytes: added tokens are their text; SentencePiece pieces spell ``▁`` as a
    space and ``<0xNN>`` as a byte; byte-level BPE pieces map each character to one byte."""
    added = {i: t.content for i, t in tok.added_tokens_decoder.items()}
    out = []
    for i, piece in zip(ids, tok.convert_ids_to_tokens(ids)):
        if i in added:
            out.append(added[i].encode())
        elif spm and _SPM_BYTE.fullmatch(piece):
            out.append(bytes([int(piece[3:5], 16)]))
        elif spm:
            out.append(piece.replace("▁", " ").encode())
        else:
            out.append(bytes(_BYTE_DECODER[c] for c in piece))
    return out


def token_chars(text: str, pieces: list[bytes]) -> list[range]:
    """The characters each token's bytes fall in."""
    char_end = np.cumsum([len(c.encode()) for c in text])  # byte offset after each char
    spans, pos = [], 0
    for piece in pieces:
        first = int(np.searchsorted(char_end, pos, side="right"))
        pos += len(piece)
        last = int(np.searchsorted(char_end, pos - 1, side="right"))
        spans.append(range(first, last + 1))
    assert pos == len(text.encode()), "token bytes do not spell the text"
    return spans


def reply_spans(text: str, messages: list[dict], spm: bool) -> list[tuple[int, int, int]]:
    """``(start, end, message index)`` of each assistant reply, found in rendering order."""
    spans, cursor = [], 0
    for i, m in enumerate(messages):
        content = m["content"].strip() if spm else m["content"]
        at = text.find(content, cursor)
        assert at >= 0, f"message {i} not found in the rendering"
        cursor = at + len(content)
        if m["role"] == "assistant":
            spans.append((at, cursor, i))
    return spans


def trained_chars(reply: str, cfg: MaskConfig) -> np.ndarray:
    out = np.zeros(len(reply), dtype=bool)
    if cfg.strategy == "custom":
        for m in re.finditer(CUSTOM, reply):
            out[m.start(1) : m.end(1)] = True
        return out
    spans = json_spans(reply)
    if cfg.strategy == "none" or all(kind == "other" for _, _, kind in spans):
        out[:] = True
        return out
    for s, e, kind in spans:
        out[s:e] = kind in TRAINED_KINDS[cfg.strategy]
    # Value edges: the whitespace character right before a scalar value, the character after a number.
    for (s, e, kind), (_, _, after) in zip(spans, spans[1:]):
        if kind == "whitespace" and after in ("value_quote", "string", "number", "literal"):
            out[e - 1] = True
        if kind == "number":
            out[e] = True
    return out


def check(tok, family: str, messages: list[dict], cfg: MaskConfig, text: str, chars: list[range], ex: dict) -> None:
    ids, labels, weights = ex["input_ids"], np.asarray(ex["labels"]), np.asarray(ex["loss_weights"])
    n = len(ids)
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    char_trained = np.zeros(len(text), dtype=bool)
    in_trained_reply = np.zeros(len(text), dtype=bool)
    ends = []
    for s, e, i in reply_spans(text, messages, spm=family == "spm"):
        if cfg.train_on == "all_assistant" or i == last:
            char_trained[s:e] = trained_chars(text[s:e], cfg)
            in_trained_reply[s:e] = True
            ends.append(e)
    expect = np.array([char_trained[list(c)].any() for c in chars])
    reply = np.array([in_trained_reply[list(c)].any() for c in chars])
    # End of turn: the first special token after each trained reply, and the whitespace before it.
    specials = set(tok.all_special_ids) | set(tok.added_tokens_decoder)
    eot = np.zeros(n, dtype=bool)
    for e in ends:
        k = next(k for k in range(n) if chars[k].start >= e)
        while ids[k] not in specials:
            assert not text[chars[k].start : chars[k].stop].strip(), "text between a reply and its end of turn"
            eot[k] = True
            k += 1
        eot[k] = True
    trained = expect | eot
    assert ((labels != -100) == (trained | (reply & (cfg.structural_weight > 0)))).all()
    assert (labels[labels != -100] == np.asarray(ids)[labels != -100]).all()
    expected_weights = np.where(trained, 1.0, np.where(reply, cfg.structural_weight, 0.0))
    np.testing.assert_allclose(weights, expected_weights)
    prompt = ~reply & ~eot
    assert (labels[prompt] == -100).all() and (weights[prompt] == 0).all()


def run_family(tok, family: str, messages: list[dict]) -> None:
    text = tok.apply_chat_template(messages, tokenize=False)
    if family == "qwen":
        assume(unicodedata.is_normalized("NFC", text))
    plain = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(plain, clean_up_tokenization_spaces=False) == text
    chars = token_chars(text, token_bytes(tok, plain, spm=family == "spm"))
    prompt_text, _ = render_prompt(tok, messages, multimodal=False)
    prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
    for cfg in CONFIGS:
        ex = build_example(tok, messages, cfg)
        assert ex["input_ids"] == plain  # training tokenization == plain tokenization of the rendering
        assert ex["input_ids"][: len(prompt_ids)] == prompt_ids  # ... and extends the inference prompt
        assert len(ex["labels"]) == len(ex["loss_weights"]) == len(ex["attention_mask"]) == len(plain)
        assert ex["json_found"] and not ex["truncated"]
        check(tok, family, messages, cfg, text, chars, ex)


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("family", ["smollm2", "qwen", "spm"])
@SETTINGS
@given(messages=chats())
def test_masks_on_generated_chats(family, messages):
    run_family(family_tokenizer(family), family, messages)


@settings(max_examples=60, deadline=None)
@given(doc=documents, layout=layouts)
def test_json_spans_recover_the_document(doc, layout):
    """Keys, strings, numbers and literals, read back from their spans, are the document's."""
    text = json.dumps(doc, **layout)
    spans = json_spans(text)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a[1] == b[0] and a[2] != b[2] for a, b in zip(spans, spans[1:]))
    got = {k: [text[s:e] for s, e, kind in spans if kind == k] for k in ("key", "string", "number", "literal", "punct")}
    want = {"key": [], "string": [], "number": [], "literal": [], "quotes": 0, "key_quotes": 0}

    def walk(v):
        if isinstance(v, dict):
            for k, item in v.items():
                want["key_quotes"] += 2
                if k:
                    want["key"].append(k)
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)
        elif isinstance(v, str):
            want["quotes"] += 2
            if v:
                want["string"].append(v)
        elif v is None or isinstance(v, bool):
            want["literal"].append(json.dumps(v))
        else:
            want["number"].append(v)

    walk(doc)
    assert [json.loads(f'"{k}"') for k in got["key"]] == want["key"]
    assert [json.loads(f'"{s}"') for s in got["string"]] == want["string"]
    assert [json.loads(n) for n in got["number"]] == want["number"]
    assert "".join(got["literal"]) == "".join(want["literal"])
    assert sum(e - s for s, e, kind in spans if kind == "value_quote") == want["quotes"]
    assert sum(e - s for s, e, kind in spans if kind == "key_quote") == want["key_quotes"]
    assert set("".join(got["punct"])) <= set("{}[]:,")


@settings(max_examples=300, deadline=None)
@given(st.lists(documents, min_size=1, max_size=6), layouts)
@example([{"": "Infinity"}], {"separators": (",", ":")})  # found by CI: a string holding "Infinity"
def test_the_vectorised_lexer_agrees_with_the_regex_lexer(parts, layout):
    """Long replies take the vectorised lexer; it must classify every character as the
    per-token regex lexer does (documents of any length, layout and escapes)."""
    lexer = importlib.import_module("model_garden.masking.json_spans")
    doc = json.dumps(parts, **layout)
    fast = lexer._lex_vectorised(doc)
    if fast is None:  # escapes, NaN or Infinity (even inside a string): the regex lexer's job
        assert "\\" in doc or "NaN" in doc or "Infinity" in doc, doc
        return
    regex = np.empty(len(doc), dtype=np.uint8)
    with unittest.mock.patch.object(lexer, "_VECTOR_MIN", 10**9):
        assert lexer.classify(doc, regex)
    assert fast.tolist() == regex.tolist(), doc
