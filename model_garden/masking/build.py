"""Turn one chat into model inputs, labels and loss weights.

``build_example`` renders the chat with the model's template (see ``render``),
tokenizes the text once (character offsets from the tokens' bytes for byte-level BPE,
from the tokenizer otherwise), and maps character classes to tokens: a token is
trained if any of its characters is trained. The end-of-turn token after each trained
reply is always trained. For a vision-language processor the processor expands image and
video placeholders itself; its replacement offsets move the reply spans to the expanded
text, and placeholder tokens are never trained.

Try it: ``python -m model_garden.masking.build``
"""

from __future__ import annotations

import weakref
from itertools import chain
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
_IS_PROCESSOR: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()
_TOKEN_BYTES: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
# Tokens kept on each side of the replies' token range: more than the end-of-turn lookahead.
_MARGIN = 8


def is_processor(obj: Any) -> bool:
    """True for a multimodal processor (it wraps a tokenizer), False for a tokenizer."""
    try:
        return _IS_PROCESSOR[obj]
    except (KeyError, TypeError):
        pass
    # Cached: on a tokenizer each failed hasattr goes through transformers' __getattr__.
    answer = hasattr(obj, "tokenizer") and (hasattr(obj, "image_processor") or hasattr(obj, "video_processor"))
    try:
        _IS_PROCESSOR[obj] = answer
    except TypeError:
        pass
    return answer


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


def _token_bytes(tokenizer: Any) -> tuple[list[bytes | None], np.ndarray] | None:
    """Each token id's bytes and their lengths, for a byte-level BPE vocabulary (GPT-2
    style: SmolLM2, Qwen); ``None`` for others (SentencePiece's ``▁``, WordPiece's
    ``##``). Built once per tokenizer (about 60 ms for 49k tokens)."""
    try:
        return _TOKEN_BYTES[tokenizer]
    except (KeyError, TypeError):
        pass
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    decoder = {c: b for b, c in bytes_to_unicode().items()}
    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True)
    added = {i: t.content for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    pieces: list[bytes | None] | None = [None] * (max(vocab.values(), default=-1) + 1)
    for piece, i in vocab.items():
        if i in added:
            pieces[i] = added[i].encode() or None
            continue
        try:
            pieces[i] = bytes(decoder[c] for c in piece)
        except KeyError:
            pieces = None
            break
    table = None if pieces is None else (pieces, np.array([len(b or b"") for b in pieces], dtype=np.int64))
    try:
        _TOKEN_BYTES[tokenizer] = table
    except TypeError:
        pass
    return table


def _byte_level_offsets(table: tuple[list[bytes | None], np.ndarray], text: str, ids: list[int]) -> np.ndarray | None:
    """Character offsets of ``ids`` from their byte lengths (``table`` from
    ``_token_bytes``), when their bytes spell ``text`` exactly; ``None`` otherwise (the
    caller asks the tokenizer for offsets).

    Tokens whose bytes concatenate to the text's UTF-8 bytes partition it, so the check
    is the proof; it fails for whatever breaks that (a normaliser that changed the text,
    a dropped byte, an added token that strips spaces) and costs a join, against the
    tokenizer's offset bookkeeping, which costs a third of the encoding.
    """
    pieces, lengths = table
    raw = text.encode()
    try:
        if b"".join([pieces[i] for i in ids]) != raw:
            return None
    except (IndexError, TypeError):  # an id outside the table, or a token without bytes
        return None
    sizes = lengths[np.asarray(ids, dtype=np.int64)]
    ends = np.cumsum(sizes)
    starts = ends - sizes
    if len(raw) != len(text):  # bytes to characters; a token inside a character covers it
        char_of_byte = np.cumsum((np.frombuffer(raw, dtype=np.uint8) & 0xC0) != 0x80) - 1
        starts, ends = char_of_byte[starts], char_of_byte[ends - 1] + 1
    return np.stack([starts, ends], axis=1)


def _encode_text(tokenizer: Any, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], int, int, Any]:
    """Tokenize ``text``; return the ids, a token window ``lo..hi`` around the trained
    replies (the prompt, most of a long example, is never converted to arrays; the caller
    checks the window and widens it to all tokens when needed) and ``offsets_of(a, b)``,
    the character offsets of tokens ``a..b``."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise MaskingError(f"{type(tokenizer).__name__} is a slow tokenizer; exact masks need a fast (tokenizers) one")
    offsets, table = None, _token_bytes(tokenizer)
    if table is not None:
        ids = backend.encode_batch_fast([text], add_special_tokens=False)[0].ids
        offsets = _byte_level_offsets(table, text, ids)
    if offsets is not None:
        if not spans:
            return ids, 0, 0, lambda a, b: offsets[a:b]
        first = int(np.searchsorted(offsets[:, 1], spans[0][0], side="right"))
        last = int(np.searchsorted(offsets[:, 0], spans[-1][1] - 1, side="right"))
        return ids, max(0, first - _MARGIN), min(len(ids), last + _MARGIN), lambda a, b: offsets[a:b]
    enc = backend.encode(text, add_special_tokens=False)
    ids = enc.ids
    lo, hi = 0, 0
    if spans:
        first, last = enc.char_to_token(spans[0][0]), enc.char_to_token(max(spans[-1][1] - 1, 0))
        lo, hi = (0, len(ids)) if first is None or last is None else (max(0, first - _MARGIN), min(len(ids), last + 1 + _MARGIN))
    return ids, lo, hi, lambda a, b: np.fromiter(
        chain.from_iterable(map(enc.token_to_chars, range(a, b))), dtype=np.int64, count=2 * (b - a)
    ).reshape(-1, 2)


def _window_ok(lo: int, hi: int, n: int, starts: np.ndarray, ends: np.ndarray, spans: list[tuple[int, int]]) -> bool:
    """Whether tokens ``lo..hi`` hold every token touching a reply, and room after the
    last reply for its end of turn (``_end_of_turn`` looks up to 4 tokens ahead)."""
    if not spans:
        return True
    if lo > 0 and ends[0] > spans[0][0]:
        return False
    return hi == n or (hi - lo >= 5 and starts[-5] >= spans[-1][1])


def _window_spans(offsets_of: Any, lo: int, hi: int, n_chars: int) -> tuple[np.ndarray, np.ndarray]:
    """``token_spans`` of tokens ``lo..hi``, as computed over the whole sequence (the
    token before ``lo`` closes the gap in front of it)."""
    first = max(lo - 1, 0)
    starts, ends = token_spans(offsets_of(first, hi), n_chars)
    return (starts[1:], ends[1:]) if lo > 0 else (starts, ends)


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


def _mask_forced(tokenizer: Any, schema: dict | None, ids: list[int], starts, ends, spans, tok_trained, name: str) -> bool:
    """Untrain the reply tokens the decoding grammar forces; False if a reply could not
    be judged (its tokens share characters with template text, or the grammar rejects it)."""
    from model_garden.masking.schema_forced import forced_tokens

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


def build_example(
    processing: Any,
    messages: list[dict[str, Any]],
    cfg: MaskConfig | None = None,
    images: list | None = None,
    max_length: int | None = None,
    *,
    example: str | int = "example",
    processor_kwargs: dict[str, Any] | None = None,
    schema: dict | None = None,
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
        schema: The reply schema for ``schema-forced`` (default ``cfg.schema``).

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
    tokenizer = processing.tokenizer if multimodal else processing
    extras: dict[str, Any] = {}
    replacements: list = []
    if multimodal:
        if images is None:
            from model_garden.data.images import load_image

            images = [load_image(ref, where=name) for ref in conv.images]
        ids, offsets, text, replacements, extras = _encode_multimodal(processing, text, images, conv.videos, processor_kwargs)
        spans = [(_shift(s, replacements), _shift(e, replacements)) for s, e in spans]
        lo, hi = 0, len(ids)
        offsets_of = lambda a, b: offsets[a:b]  # noqa: E731
    else:
        ids, lo, hi, offsets_of = _encode_text(tokenizer, text, spans)

    n, n_chars = len(ids), len(text)
    starts, ends = _window_spans(offsets_of, lo, hi, n_chars)
    if not _window_ok(lo, hi, n, starts, ends, spans):
        lo, hi = 0, n
        starts, ends = _window_spans(offsets_of, lo, hi, n_chars)
    origin = int(starts.min()) if hi > lo else 0  # per-character arrays start here

    size = n_chars - origin
    classes = np.zeros(size + 1, dtype=np.uint8)
    trained = np.zeros(size + 1, dtype=np.uint8)
    in_reply = np.zeros(size + 1, dtype=np.uint8)
    json_found = True
    pieces = [p for p, t in zip(conv.pieces, conv.trained) if t]
    for (s, e), piece in zip(spans, pieces):
        piece_classes, piece_trained, found = reply_char_masks(text[s:e], cfg)
        classes[s - origin : e - origin] = piece_classes
        trained[s - origin : e - origin] = piece_trained
        in_reply[s - origin : e - origin] = 1
        json_found &= found or cfg.strategy in ("none", "custom")
    for r in replacements:
        ns, ne = r["new_span"]
        classes[ns - origin : ne - origin] = MEDIA

    local_starts, local_ends = starts - origin, ends - origin
    tok_trained = any_char(trained, local_starts, local_ends)
    tok_reply = any_char(in_reply, local_starts, local_ends)
    # A token's class is its most meaningful character's: `' "'` is a value quote, not whitespace.
    if hi > lo:
        window_classes = _BY_RANK[np.maximum.reduceat(_RANK[classes[:size]], np.minimum(local_starts, size - 1))]
    else:
        window_classes = np.zeros(0, dtype=np.uint8)

    window_ids = ids[lo:hi]
    if cfg.strategy == "schema-forced":
        json_found &= _mask_forced(tokenizer, schema or cfg.schema, window_ids, starts, ends, spans, tok_trained, name)

    special = _special_ids(tokenizer)
    for _, e in spans:
        eot = _end_of_turn(window_ids, starts, ends, text, e, special)
        tok_trained[eot] = True
        window_classes[eot] = np.where(tok_reply[eot], window_classes[eot], END_OF_TURN)

    weighted = tok_reply & ~tok_trained if cfg.structural_weight > 0 else np.zeros(hi - lo, dtype=bool)
    # Outside the window every token is prompt: masked, weight 0.
    labels, weights = [-100] * n, [0.0] * n
    labels[lo:hi] = np.where(tok_trained | weighted, np.asarray(window_ids, dtype=np.int64), -100).tolist()
    weights[lo:hi] = np.where(tok_trained, 1.0, np.where(weighted, cfg.structural_weight, 0.0)).tolist()
    tok_classes = np.zeros(n, dtype=np.uint8)
    tok_classes[lo:hi] = window_classes

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
        "labels": labels,
        "loss_weights": weights,
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
