"""Tokenize once and know where every token sits in the text.

``encode_text`` tokenizes a rendered chat without offsets (a third of the tokenizer's
cost) and, for byte-level BPE vocabularies (GPT-2 style: SmolLM2, Qwen), finds the
character span of each token in the reply window from the tokens' bytes, proving that
they spell the text; other tokenizers give their offsets. ``encode_multimodal`` lets a
vision-language processor expand image and video placeholders and returns the offsets
and the replacements that moved the text.

Try it: ``python -m model_garden.masking.tokens``
"""

from __future__ import annotations

import weakref
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
from transformers.convert_slow_tokenizer import bytes_to_unicode

from model_garden.masking.strategies import MaskingError

_SPECIAL_IDS: "weakref.WeakKeyDictionary[Any, frozenset[int]]" = weakref.WeakKeyDictionary()
_TOKEN_BYTES: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
# Tokens kept before the one holding the first reply's first character (offsets from a
# tokenizer may overlap); the window always runs to the end of the text.
_MARGIN = 8


def special_ids(tokenizer: Any) -> frozenset[int]:
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


def _tail_spans(
    table: tuple[list[bytes | None], np.ndarray], text: str, ids: list[int], start: int, id_array: np.ndarray | None = None
) -> tuple[int, np.ndarray, np.ndarray] | None:
    """Character spans of the last tokens of ``ids``, from their byte lengths (``table``
    from ``_token_bytes``), when their bytes spell the end of ``text`` exactly; ``None``
    otherwise (the caller asks the tokenizer for offsets).

    Returns ``(lo, starts, ends)`` for tokens ``lo..``: every token from ``_MARGIN`` tokens
    before the one holding character ``start`` to the end. Only these tokens are looked
    at, so the prompt before them (most of a long example) costs nothing. Tokens whose
    bytes concatenate to the text's last UTF-8 bytes partition that tail, so the check is
    the proof; it fails for whatever breaks that (a normaliser that changed the text, a
    dropped byte, an added token that strips spaces) and costs a join, against the
    tokenizer's offset bookkeeping, which costs a third of the encoding. ``id_array`` is
    ``ids`` as an array, when the caller has it.
    """
    pieces, lengths = table
    id_array = np.fromiter(ids, dtype=np.int64, count=len(ids)) if id_array is None else id_array
    raw = text.encode()
    n, ascii_only = len(ids), len(raw) == len(text)
    need = len(raw) - (start if ascii_only else len(text[:start].encode()))  # bytes from `start` to the end
    # How many tokens from the end hold those bytes and the margin: first a guess (JSON
    # averages 3-4 bytes a token), then one per byte, which is enough (a token that passes
    # the check below holds at least one byte).
    for m in (min(n, need // 2 + 2 * _MARGIN), min(n, need + _MARGIN)):
        try:
            sizes = lengths[id_array[n - m :]][::-1]  # the last token first
        except IndexError:  # an id outside the table
            return None
        from_end = np.cumsum(sizes)
        count = int(np.searchsorted(from_end, need)) + 1 + _MARGIN
        if count <= m or m == n:
            break
    count = min(count, m)
    if count == 0:  # no token at all
        return None
    base = len(raw) - int(from_end[count - 1])  # the window's first byte
    try:
        window = itemgetter(*ids[n - count :])(pieces)  # one token: its bytes, not a tuple
        if base < 0 or (window if count == 1 else b"".join(window)) != raw[base:]:
            return None
    except TypeError:  # a token without bytes
        return None
    starts = len(raw) - from_end[count - 1 :: -1]
    ends = starts + sizes[count - 1 :: -1]
    if not ascii_only:  # bytes to characters; a token inside a character covers it
        is_lead = (np.frombuffer(raw, dtype=np.uint8, offset=base) & 0xC0) != 0x80
        char_of_byte = len(text) - int(is_lead.sum()) - 1 + np.cumsum(is_lead)
        starts, ends = char_of_byte[starts - base], char_of_byte[ends - base - 1] + 1
    return n - count, starts, ends


def encode_ids(tokenizer: Any, text: str) -> list[int]:
    """The ids of ``text`` exactly as training tokenizes it (no special tokens added: the
    template wrote them), without the cost of offsets."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise MaskingError(f"{type(tokenizer).__name__} is a slow tokenizer; exact masks need a fast (tokenizers) one")
    return backend.encode_batch_fast([text], add_special_tokens=False)[0].ids


def encode_text(tokenizer: Any, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], int, np.ndarray, np.ndarray, np.ndarray]:
    """Tokenize ``text``; return the ids, the character spans ``(starts, ends)`` of
    tokens ``lo..``, a window that holds every token touching a trained reply, some
    before it and everything after it (without trained replies the window is empty),
    and the window's ids as an array."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise MaskingError(f"{type(tokenizer).__name__} is a slow tokenizer; exact masks need a fast (tokenizers) one")
    table = _token_bytes(tokenizer)
    if table is not None:
        ids = encode_ids(tokenizer, text)
        if not spans:
            empty = np.zeros(0, dtype=np.int64)
            return ids, len(ids), empty, empty, empty
        id_array = np.fromiter(ids, dtype=np.int64, count=len(ids))
        window = _tail_spans(table, text, ids, spans[0][0], id_array)
        if window is not None:
            return ids, *window, id_array[window[0] :]
    enc = backend.encode(text, add_special_tokens=False)
    ids, n = enc.ids, len(enc.ids)
    if not spans:
        empty = np.zeros(0, dtype=np.int64)
        return ids, n, empty, empty, empty
    first = enc.char_to_token(spans[0][0])
    lo = 0 if first is None else max(0, first - _MARGIN)
    # The token before the window closes the gap in front of it, as over the whole sequence.
    before = max(lo - 1, 0)
    offsets = np.fromiter(chain.from_iterable(map(enc.token_to_chars, range(before, n))), dtype=np.int64, count=2 * (n - before))
    starts, ends = token_spans(offsets.reshape(-1, 2), len(text))
    window_ids = np.asarray(ids[lo:], dtype=np.int64)
    return (ids, lo, starts[1:], ends[1:], window_ids) if lo > 0 else (ids, lo, starts, ends, window_ids)


def encode_multimodal(
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


def shift(pos: int, replacements: list) -> int:
    """Map a position in the rendered text to the processor's expanded text."""
    delta = 0
    for r in replacements:
        s, e = r["span"]
        if s >= pos:
            break
        ns, ne = r["new_span"]
        delta += (ne - ns) - (e - s)
    return pos + delta


if __name__ == "__main__":
    from model_garden.models import load_processing

    tok = load_processing("smollm2-135m")
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": '{"a": 1}'}], tokenize=False)
    start = text.index('{"a"')
    ids, lo, starts, ends, _ = encode_text(tok, text, [(start, start + 8)])
    for i, s, e in zip(ids[lo:], starts, ends):
        print(f"{i:6d} {text[s:e]!r}")
