"""Turn one chat into model inputs, labels and loss weights.

``build_example`` renders the chat once with the model's template (see ``render``),
tokenizes the text once with offsets, and maps character classes to tokens: a token is
trained if any of its characters is trained. The end-of-turn token after each trained
reply is always trained. For a vision-language processor the processor expands image and
video placeholders itself; its replacement offsets move the reply spans to the expanded
text, and placeholder tokens are never trained.

Try it: ``python -m model_garden.masking.build``
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from model_garden.masking.render import normalize, render_chat
from model_garden.masking.json_spans import KEY, KEY_QUOTE, LITERAL, NUMBER, OTHER, PUNCT, STRING, VALUE_QUOTE, WHITESPACE
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
_RANK = np.zeros(256, dtype=np.uint8)
_RANK[_ORDER] = np.arange(len(_ORDER))
_BY_RANK = np.asarray(_ORDER, dtype=np.uint8)
_SPECIAL_IDS: "weakref.WeakKeyDictionary[Any, frozenset[int]]" = weakref.WeakKeyDictionary()


def is_processor(obj: Any) -> bool:
    """True for a multimodal processor (it wraps a tokenizer), False for a tokenizer."""
    return hasattr(obj, "tokenizer") and (hasattr(obj, "image_processor") or hasattr(obj, "video_processor"))


def text_tokenizer(obj: Any) -> Any:
    """The tokenizer of a tokenizer or processor."""
    return obj.tokenizer if is_processor(obj) else obj


def _special_ids(tokenizer: Any) -> frozenset[int]:
    try:
        return _SPECIAL_IDS[tokenizer]
    except (KeyError, TypeError):
        pass
    ids = set(getattr(tokenizer, "all_special_ids", ()))
    ids.update(getattr(tokenizer, "added_tokens_decoder", {}).keys())
    ids = frozenset(ids)
    try:
        _SPECIAL_IDS[tokenizer] = ids
    except TypeError:
        pass
    return ids


def token_spans(offsets: np.ndarray, n_chars: int) -> tuple[np.ndarray, np.ndarray]:
    """Character span of each token, as ``(starts, ends)`` arrays.

    Offsets may leave gaps (byte-level tokenizers that trim spaces from offsets) or be
    empty; the gaps are closed so each character belongs to a token and each token
    covers at least one character.
    """
    starts, ends = offsets[:, 0].copy(), offsets[:, 1].copy()
    if len(starts):
        prev_ends = np.concatenate(([0], ends[:-1]))
        starts = np.minimum(starts, prev_ends)
        ends = np.minimum(np.maximum(ends, starts + 1), n_chars)
    return starts, ends


def any_char(char_mask: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per token: does any of its characters have ``char_mask`` set?"""
    cum = np.concatenate(([0], np.cumsum(char_mask, dtype=np.int64)))
    return cum[ends] - cum[starts] > 0


def _encode_text(tokenizer: Any, text: str) -> tuple[list[int], np.ndarray]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise MaskingError(f"{type(tokenizer).__name__} is a slow tokenizer; exact masks need a fast (tokenizers) one")
    enc = backend.encode(text, add_special_tokens=False)
    return enc.ids, np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)


def _encode_multimodal(
    processor: Any, text: str, images: list, videos: list, processor_kwargs: dict[str, Any] | None = None
) -> tuple[list[int], np.ndarray, str, list, dict]:
    kwargs: dict[str, Any] = dict(processor_kwargs or {})
    if images:
        kwargs["images"] = images
    if videos:
        kwargs["videos"] = videos
    out = processor(
        text=[text],
        return_offsets_mapping=True,
        return_text_replacement_offsets=True,
        add_special_tokens=False,
        return_tensors="pt",
        **kwargs,
    )
    out = dict(out)
    ids = out.pop("input_ids")[0].tolist()
    offsets = out.pop("offset_mapping")[0].numpy().astype(np.int64)
    replacements = (out.pop("text_replacement_offsets", None) or [[]])[0]
    out.pop("attention_mask", None)
    # Per-token like input_ids (Qwen2-VL's M-RoPE needs it): returned as a list, cut and padded with them.
    if "mm_token_type_ids" in out:
        out["mm_token_type_ids"] = out["mm_token_type_ids"][0].tolist()
    expanded, cursor = [], 0
    for r in replacements:
        s, e = r["span"]
        expanded += [text[cursor:s], r["replacement"]]
        cursor = e
    expanded.append(text[cursor:])
    return ids, offsets, "".join(expanded), replacements, out


def _shift(pos: int, replacements: list) -> int:
    """Map a position in the rendered text to the processor's expanded text."""
    delta = 0
    for r in replacements:
        s, e = r["span"]
        if s >= pos:
            break
        ns, ne = r["new_span"]
        delta += (ne - ns) - (e - s)
    return pos + delta


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


def build_example(
    processing: Any,
    messages: list[dict[str, Any]],
    cfg: MaskConfig | None = None,
    images: list | None = None,
    max_length: int | None = None,
    *,
    example: str | int = "example",
    processor_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Tokenize a chat and compute its labels and loss weights.

    Args:
        processing: A fast tokenizer, or a vision-language processor.
        messages: OpenAI chat messages (``content`` a string or a list of parts).
        cfg: The masking policy; response-only (``strategy="none"``) by default.
        images: Images for a processor, in the order of the image parts; by default the
            parts' own images (PIL images, ``data:`` URIs or file paths) are loaded.
        max_length: Truncate to this many tokens (the end is cut).
        example: How errors name this example (an index or an id).
        processor_kwargs: Extra arguments for a processor call (e.g. a video's ``fps``).

    Returns:
        ``input_ids``, ``attention_mask``, ``labels`` (token id where trained, -100
        elsewhere) and ``loss_weights`` as lists of equal length; ``token_classes`` (a
        ``uint8`` array of class codes, see ``strategies.TOKEN_CLASS_NAMES``);
        ``json_found`` (False when a JSON strategy fell back to the whole reply);
        ``truncated``; and, for a processor, its image/video tensors.
    """
    cfg = cfg or MaskConfig()
    name = example if isinstance(example, str) else f"example {example}"
    multimodal = is_processor(processing)
    conv = normalize(messages, cfg, multimodal=multimodal, example=name)
    text, spans = render_chat(processing, conv, name)
    tokenizer = text_tokenizer(processing)
    extras: dict[str, Any] = {}
    replacements: list = []
    if multimodal:
        if images is None:
            from model_garden.data.images import load_image

            images = [load_image(ref, where=name) for ref in conv.images]
        ids, offsets, text, replacements, extras = _encode_multimodal(processing, text, images, conv.videos, processor_kwargs)
        spans = [(_shift(s, replacements), _shift(e, replacements)) for s, e in spans]
    else:
        ids, offsets = _encode_text(tokenizer, text)

    n_chars = len(text)
    classes = np.zeros(n_chars + 1, dtype=np.uint8)
    trained = np.zeros(n_chars + 1, dtype=np.uint8)
    in_reply = np.zeros(n_chars + 1, dtype=np.uint8)
    json_found = True
    pieces = [p for p, t in zip(conv.pieces, conv.trained) if t]
    for (s, e), piece in zip(spans, pieces):
        piece_classes, piece_trained, found = reply_char_masks(text[s:e], cfg)
        classes[s:e] = piece_classes
        trained[s:e] = piece_trained
        in_reply[s:e] = 1
        json_found &= found or cfg.strategy in ("none", "custom")
    for r in replacements:
        ns, ne = r["new_span"]
        classes[ns:ne] = MEDIA

    starts, ends = token_spans(offsets, n_chars)
    tok_trained = any_char(trained, starts, ends)
    tok_reply = any_char(in_reply, starts, ends)
    # A token's class is its most meaningful character's: `' "'` is a value quote, not whitespace.
    if len(ids):
        tok_classes = _BY_RANK[np.maximum.reduceat(_RANK[classes[:n_chars]], np.minimum(starts, n_chars - 1))]
    else:
        tok_classes = np.zeros(0, dtype=np.uint8)

    special = _special_ids(tokenizer)
    for _, e in spans:
        eot = _end_of_turn(ids, starts, ends, text, e, special)
        tok_trained[eot] = True
        tok_classes[eot] = np.where(tok_reply[eot], tok_classes[eot], END_OF_TURN)

    ids_arr = np.asarray(ids, dtype=np.int64)
    weighted = tok_reply & ~tok_trained if cfg.structural_weight > 0 else np.zeros(len(ids), dtype=bool)
    labels = np.where(tok_trained | weighted, ids_arr, -100)
    weights = np.where(tok_trained, 1.0, np.where(weighted, cfg.structural_weight, 0.0))

    truncated = max_length is not None and len(ids) > max_length
    if truncated:
        if (tok_classes[max_length:] == MEDIA).any() and multimodal:
            raise MaskingError(f"{name}: --max-length {max_length} would cut image/video tokens; raise it")
        ids, labels, weights, tok_classes = ids[:max_length], labels[:max_length], weights[:max_length], tok_classes[:max_length]
        if "mm_token_type_ids" in extras:
            extras["mm_token_type_ids"] = extras["mm_token_type_ids"][:max_length]
    return {
        "input_ids": list(ids),
        "attention_mask": [1] * len(ids),
        "labels": labels.tolist(),
        "loss_weights": weights.tolist(),
        "token_classes": tok_classes,
        "json_found": bool(json_found),
        "truncated": bool(truncated),
        **extras,
    }


if __name__ == "__main__":
    from model_garden.models import load_processing

    tok = load_processing("smollm2-135m")
    msgs = [
        {"role": "user", "content": "Extract the name and age: John is 30."},
        {"role": "assistant", "content": '{"name": "John", "age": 30}'},
    ]
    ex = build_example(tok, msgs, MaskConfig(strategy="aggressive"))
    for i, lab, w in zip(ex["input_ids"], ex["labels"], ex["loss_weights"]):
        print(f"{tok.decode([i])!r:20} {'TRAIN' if lab != -100 else '-':6} {w}")
