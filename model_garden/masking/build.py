"""Turn one chat into model inputs, labels and loss weights: the mask engine.

``encode_conversation`` renders the chat with the model's template (see ``render``),
tokenizes the text once (see ``tokens``: character spans from the tokens' bytes for
byte-level BPE, from the tokenizer otherwise), and maps character classes to tokens: a token is
trained if any of its characters is trained. The end-of-turn token after each trained
reply is always trained. For a vision-language processor the processor expands image and
video placeholders itself; its replacement offsets move the reply spans to the expanded
text, and placeholder tokens are never trained.

``ChatCodec`` (``codec.py``) normalises a sample, opens its images and calls
``encode_conversation``; ``build_example`` is the one-call form.

Try it: ``python -m model_garden.masking.build``
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model_garden.masking.conversation import Conversation
from model_garden.masking.render import render_chat
from model_garden.masking.schema_forced import forced_tokens
from model_garden.models import is_processor
from model_garden.masking.json_spans import KEY, KEY_QUOTE, LITERAL, NUMBER, OTHER, PUNCT, STRING, VALUE_QUOTE, WHITESPACE
from model_garden.masking.tokens import encode_multimodal, encode_text, shift, special_ids, token_spans
from model_garden.masking.strategies import (
    END_OF_TURN,
    MEDIA,
    PROMPT,
    MaskConfig,
    MaskingError,
    reply_char_masks,
)

# Class codes ordered from least to most meaningful, for naming a token that mixes classes.
_ORDER = [PROMPT, WHITESPACE, PUNCT, OTHER, KEY_QUOTE, VALUE_QUOTE, KEY, LITERAL, NUMBER, STRING, END_OF_TURN, MEDIA]
_CLASS_BIT = np.zeros(256, dtype=np.uint16)
_CLASS_BIT[_ORDER] = 1 << np.arange(len(_ORDER))
_CLASSES, _TRAINED, _REPLY = (1 << len(_ORDER)) - 1, 1 << len(_ORDER), 1 << (len(_ORDER) + 1)
_REPLY_BITS = np.array([_REPLY, _REPLY | _TRAINED], dtype=np.uint16)  # by a character's trained flag
# The class of a set of class bits: the highest one's (no bit: prompt).
_TOP_CLASS = np.array([_ORDER[max(m.bit_length() - 1, 0)] for m in range(_CLASSES + 1)], dtype=np.uint8)


def _end_of_turn(ids: list[int], starts: np.ndarray, ends: np.ndarray, text: str, pos: int, special: frozenset[int]) -> list[int]:
    """Token indices that close a reply ending at character ``pos``: the first token
    after it, extended over whitespace-only tokens to a special token (``<|im_end|>``,
    ``<end_of_utterance>``, ``</s>``) when one follows within a few tokens."""
    i = int(np.searchsorted(starts, pos, side="left"))
    if i >= len(ids):
        return []
    for k in range(i, min(i + 4, len(ids))):
        if ids[k] in special:
            return list(range(i, k + 1))
        if text[starts[k] : ends[k]].strip():
            break
    return [i]


def _mask_forced(tokenizer: Any, schema: dict | None, ids: list[int], starts, ends, spans, tok_trained, name: str) -> bool:
    """Untrain the reply tokens the decoding grammar forces; False if a reply could not
    be judged (its tokens share characters with template text, or the grammar rejects it)."""
    if schema is None:
        raise MaskingError(f"{name}: --mask-strategy schema-forced needs the reply schema (--schema or schema.json)")
    judged = True
    for s, e in spans:
        lo, hi = int(np.searchsorted(starts, s, side="left")), int(np.searchsorted(ends, e, side="left")) + 1
        own = lo < hi <= len(ids) and starts[lo] == s and ends[hi - 1] == e
        forced = forced_tokens(tokenizer, schema, ids[lo:hi]) if own else None
        if forced is None:
            judged = False
            continue
        tok_trained[lo:hi] &= ~forced
    return judged


def encode_conversation(
    processing: Any,
    conv: Conversation,
    cfg: MaskConfig,
    *,
    images: list,
    max_length: int | None = None,
    name: str = "example",
    processor_kwargs: dict[str, Any] | None = None,
    schema: dict | None = None,
) -> dict[str, Any]:
    """The mask engine: render a normalised conversation, tokenize it once, and compute its
    labels and loss weights. ``ChatCodec.encode_train`` is the way in; see it for the result."""
    text, spans = render_chat(processing, conv, name)
    multimodal = is_processor(processing)
    tokenizer = processing.tokenizer if multimodal else processing
    extras: dict[str, Any] = {}
    replacements: list = []
    if multimodal:
        ids, offsets, text, replacements, extras = encode_multimodal(processing, text, images, conv.videos, processor_kwargs)
        spans = [(shift(s, replacements), shift(e, replacements)) for s, e in spans]
        lo = 0
        starts, ends = token_spans(offsets, len(text))
        window_array = np.asarray(ids, dtype=np.int64)
    else:
        ids, lo, starts, ends, window_array = encode_text(tokenizer, text, spans)
    n, n_chars = len(ids), len(text)
    # Per-character arrays start at the window's first token; tokens lo..n are the window.
    origin = int(starts.min()) if n > lo else 0

    # One code per character: its class as a one-hot bit, a trained bit and a reply bit.
    # OR-ing a token's characters then gives all three for the token in one pass.
    codes = np.zeros(n_chars - origin + 1, dtype=np.uint16)
    json_found = True
    for s, e in spans:
        piece_classes, piece_trained, found = reply_char_masks(text[s:e], cfg)
        codes[s - origin : e - origin] = _CLASS_BIT[piece_classes] | _REPLY_BITS[piece_trained]
        json_found &= found or cfg.strategy in ("none", "custom")
    for r in replacements:
        ns, ne = r["new_span"]
        codes[ns - origin : ne - origin] = _CLASS_BIT[MEDIA]
    if n > lo:
        bounds = np.empty(2 * (n - lo), dtype=np.int64)
        bounds[0::2], bounds[1::2] = starts - origin, ends - origin
        # Pairs (start, end) make reduceat OR each token's own characters; the entries between
        # pairs are dropped.
        token_codes = np.bitwise_or.reduceat(codes, bounds)[0::2]
    else:
        token_codes = np.zeros(0, dtype=np.uint16)
    tok_trained = (token_codes & _TRAINED) != 0
    tok_reply = (token_codes & _REPLY) != 0
    # A token's class is its most meaningful character's: `' "'` is a value quote, not whitespace.
    window_classes = _TOP_CLASS[token_codes & _CLASSES]

    window_ids = ids[lo:]
    if cfg.strategy == "schema-forced":
        json_found &= _mask_forced(tokenizer, schema or cfg.schema, window_ids, starts, ends, spans, tok_trained, name)

    special = special_ids(tokenizer)
    for _, e in spans:
        for i in _end_of_turn(window_ids, starts, ends, text, e, special):
            tok_trained[i] = True
            if not tok_reply[i]:
                window_classes[i] = END_OF_TURN

    weighted = tok_reply & ~tok_trained if cfg.structural_weight > 0 else np.zeros(n - lo, dtype=bool)
    # Outside the window every token is prompt: masked, weight 0.
    labels, weights = [-100] * n, [0.0] * n
    labels[lo:] = np.where(tok_trained | weighted, window_array, -100).tolist()
    weights[lo:] = np.where(tok_trained, 1.0, np.where(weighted, cfg.structural_weight, 0.0)).tolist()
    tok_classes = np.zeros(n, dtype=np.uint8)
    tok_classes[lo:] = window_classes

    if multimodal and max_length is not None and (tok_classes[max_length:] == MEDIA).any():
        raise MaskingError(f"{name}: --max-length {max_length} would cut image/video tokens; raise it")
    return truncate(
        {
            "input_ids": ids,
            "attention_mask": [1] * len(ids),
            "labels": labels,
            "loss_weights": weights,
            "token_classes": tok_classes,
            "json_found": bool(json_found),
            "truncated": False,
            **extras,
        },
        max_length,
    )


def truncate(ex: dict[str, Any], max_length: int | None) -> dict[str, Any]:
    """An example cut to ``max_length`` tokens (the end is cut); ``truncated`` says if it was."""
    if max_length is None or len(ex["input_ids"]) <= max_length:
        return ex
    cut = {k: ex[k][:max_length] for k in ("input_ids", "attention_mask", "labels", "loss_weights", "token_classes", "mm_token_type_ids") if k in ex}
    return {**ex, **cut, "truncated": True}


if __name__ == "__main__":
    from model_garden.masking.conversation import normalize
    from model_garden.models import load_processing

    tok = load_processing("smollm2-135m")
    msgs = [
        {"role": "user", "content": "Extract the name and age: John is 30."},
        {"role": "assistant", "content": '{"name": "John", "age": 30}'},
    ]
    cfg = MaskConfig(strategy="aggressive")
    ex = encode_conversation(tok, normalize(msgs, cfg, multimodal=False, example="example"), cfg, images=[])
    for i, lab, w in zip(ex["input_ids"], ex["labels"], ex["loss_weights"]):
        print(f"{tok.decode([i])!r:20} {'TRAIN' if lab != -100 else '-':6} {w}")
