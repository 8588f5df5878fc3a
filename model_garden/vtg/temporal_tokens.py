"""Temporal tokens: a video's length cut into ``N`` equal bins named ``<0>`` ... ``<N-1>``.

A span is written ``<|box_start|><s><e><|box_end|>`` (Qwen2-VL's grounding brackets
around a start and an end bin), so the answer is relative to the video's length and
does not depend on its duration or frame rate.

Bin convention (both directions use the same one):

* bin ``k`` covers ``[k * w, (k + 1) * w)`` seconds, with ``w = duration / N``;
* seconds -> bin: ``floor(t / w)``, clipped to ``[0, N - 1]`` (so ``t = duration`` is the
  last bin, and times outside the video land in the first or last bin);
* bin -> seconds: the bin's centre, ``(k + 0.5) * w``. A round trip moves a time by at
  most ``w / 2``; a span inside one bin comes back empty (start == end).

Try it: ``python -m model_garden.vtg.temporal_tokens 12.3 20.0 30.96``
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
from tokenizers import AddedToken

BOX_START, BOX_END = "<|box_start|>", "<|box_end|>"


def bin_token(k: int) -> str:
    """The token of bin ``k``: ``<k>``."""
    return f"<{int(k)}>"


def _check(duration: float, num_bins: int) -> None:
    if not duration > 0:
        raise ValueError(f"duration must be positive to use temporal tokens, got {duration}")
    if num_bins < 1:
        raise ValueError(f"num_bins must be at least 1, got {num_bins}")


def seconds_to_bins(start: float, end: float, duration: float, num_bins: int = 100) -> tuple[int, int]:
    """The bins holding ``start`` and ``end`` (see the module docstring for the convention)."""
    _check(duration, num_bins)
    width = duration / num_bins
    # The epsilon puts a time on a bin edge (5.1 s of 30 s is 17 widths) in the bin it
    # starts, as the half-open convention says, despite binary rounding.
    return tuple(min(max(math.floor(t / width + 1e-9), 0), num_bins - 1) for t in (start, end))  # type: ignore[return-value]


def bins_to_seconds(start_bin: int, end_bin: int, duration: float, num_bins: int = 100) -> tuple[float, float]:
    """The centres, in seconds, of bins ``start_bin`` and ``end_bin`` (clipped to ``[0, N - 1]``)."""
    _check(duration, num_bins)
    width = duration / num_bins
    return tuple((min(max(int(b), 0), num_bins - 1) + 0.5) * width for b in (start_bin, end_bin))  # type: ignore[return-value]


def format_span_tokens(start_bin: int, end_bin: int) -> str:
    """``<|box_start|><start_bin><end_bin><|box_end|>``."""
    return f"{BOX_START}{bin_token(start_bin)}{bin_token(end_bin)}{BOX_END}"


def span_to_tokens(start: float, end: float, duration: float, num_bins: int = 100) -> str:
    """A span in seconds written as temporal tokens."""
    return format_span_tokens(*seconds_to_bins(start, end, duration, num_bins))


def add_temporal_tokens(tokenizer_or_processor: Any, model: Any = None, num_bins: int = 100) -> list[int]:
    """Add ``<0>`` ... ``<num_bins - 1>`` (and ``<|box_start|>``/``<|box_end|>`` if missing)
    to a tokenizer, and make room for them in a model.

    The bin tokens are added as normal (not special) tokens: they are matched whole in
    text, and survive ``decode(skip_special_tokens=True)``, so answers can be parsed.

    New embedding rows are initialised from what the model already knows (as VTG-LLM
    does): bin ``<k>`` gets the mean embedding of the tokens that spell the number ``k``,
    so it starts close to that number instead of at noise; the box tokens get the mean of
    all existing rows. Output rows are set the same way when the head is not tied to the
    input embeddings. The embedding matrix only grows: models whose matrix is already
    padded past the tokenizer's size (Qwen2-VL) keep their size and only the rows of the
    new ids are set. A row is set only when its token is new to the tokenizer or to the
    model, so calling this twice does not reset trained rows (and a tokenizer that got the
    tokens first can be matched with its model in a second call).

    Args:
        tokenizer_or_processor: A tokenizer, or a processor holding one.
        model: A model whose embeddings to resize and initialise (optional).
        num_bins: How many bins.

    Returns:
        The ids of ``<0>`` ... ``<num_bins - 1>``, in bin order.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be at least 1, got {num_bins}")
    tokenizer = getattr(tokenizer_or_processor, "tokenizer", tokenizer_or_processor)
    vocab = tokenizer.get_vocab()
    known = len(tokenizer)
    bins = [bin_token(k) for k in range(num_bins)]
    added = {t for t in (BOX_START, BOX_END, *bins) if t not in vocab}
    box = [AddedToken(t, special=True, normalized=False) for t in (BOX_START, BOX_END) if t in added]
    if box:
        tokenizer.add_tokens(box, special_tokens=True)
    if added - {BOX_START, BOX_END}:
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in bins if t in added])
    if model is not None:
        _init_rows(tokenizer, model, known, [BOX_START, BOX_END, *bins], added)
    return tokenizer.convert_tokens_to_ids(bins)


def _init_rows(tokenizer: Any, model: Any, known: int, tokens: list[str], added: set[str]) -> None:
    """Grow the embeddings to the tokenizer and set the rows of the tokens that are new to
    the tokenizer or to the model; ``known`` is the tokenizer's size before, so padding
    rows past it do not enter the mean."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    ids = dict(zip(tokens, tokenizer.convert_tokens_to_ids(tokens)))
    fresh = [t for t in tokens if t in added or ids[t] >= rows]
    inputs = model.get_input_embeddings().weight
    outputs = model.get_output_embeddings()
    tables = [inputs] if outputs is None or outputs.weight is inputs else [inputs, outputs.weight]
    known = min(known, rows)
    with torch.no_grad():
        for table in tables:
            mean = table[:known].mean(dim=0)
            for token in fresh:
                number = token[1:-1] if token not in (BOX_START, BOX_END) else ""
                spelled = [i for i in tokenizer.encode(number, add_special_tokens=False) if i < known]
                table[ids[token]] = table[spelled].mean(dim=0) if spelled else mean


if __name__ == "__main__":
    start, end, duration = (float(x) for x in (sys.argv[1:4] if len(sys.argv) > 3 else (12.3, 20.0, 30.96)))
    bins = seconds_to_bins(start, end, duration)
    print(f"[{start}, {end}] of {duration} s -> {format_span_tokens(*bins)} -> {bins_to_seconds(*bins, duration)}")
