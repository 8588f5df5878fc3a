"""See a mask: every token coloured by trained / weighted / masked, and dataset statistics.

Used by ``model-garden inspect-masks`` and printed at the start of training, so a wrong
mask is caught before hours are spent.
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from rich.table import Table
from rich.text import Text

from model_garden.models import text_tokenizer
from model_garden.masking.strategies import MEDIA, PROMPT, TOKEN_CLASS_NAMES

_STYLE = {"trained": "bold black on green", "weighted": "black on yellow", "masked": "white on red", "prompt": "grey50"}
_CSS = {"trained": "#9be29b", "weighted": "#ffe08a", "masked": "#f4a6a6", "prompt": "#eeeeee"}


def _state(label: int, weight: float, cls: int) -> str:
    if label != -100:
        return "trained" if weight >= 1.0 else "weighted"
    return "prompt" if cls in (PROMPT, MEDIA) else "masked"


def token_rows(processing: Any, ex: dict[str, Any]) -> list[tuple[str, str, str, float]]:
    """``(token text, class name, state, weight)`` per token; state is ``trained``,
    ``weighted``, ``masked`` (in a reply but not trained) or ``prompt``. A character
    whose bytes are split across tokens (byte-level BPE) is one row, shown whole, with
    the first token's class and state."""
    tok = text_tokenizer(processing)
    pieces = tok.convert_ids_to_tokens(ex["input_ids"])
    rows = []
    i, n = 0, len(pieces)
    while i < n:
        j = i + 1
        text = tok.convert_tokens_to_string([pieces[i]]) if pieces[i] is not None else ""
        while text.endswith("\ufffd") and j < n and j - i < 4 and pieces[j] is not None:
            joined = tok.convert_tokens_to_string(pieces[i : j + 1])
            if joined.count("\ufffd") >= text.count("\ufffd"):
                break
            text, j = joined, j + 1
        label, weight, cls = ex["labels"][i], float(ex["loss_weights"][i]), int(ex["token_classes"][i])
        rows.extend([(text, TOKEN_CLASS_NAMES.get(cls, "?"), _state(label, weight, cls), weight)])
        i = j
    return rows


# Without colours (piped output, NO_COLOR), states are brackets around each token.
_MARKS = {"trained": ("[", "]"), "weighted": ("{", "}"), "masked": ("<", ">"), "prompt": ("", "")}


def render_rich(processing: Any, ex: dict[str, Any], *, prompt_tail: int = 40, marks: bool = False) -> Text:
    """The example as coloured text (or, with ``marks``, with each reply token in
    brackets: ``[trained]``, ``{weighted}``, ``<masked>``); only the last ``prompt_tail``
    prompt tokens before the first reply are shown (system prompts and OCR dumps are long)."""
    rows = token_rows(processing, ex)
    first = next((i for i, r in enumerate(rows) if r[2] != "prompt"), len(rows))
    out = Text()
    if first > prompt_tail:
        out.append(f"[... {first - prompt_tail} prompt tokens ...]", style="italic grey50")
    for text, _cls, state, _w in rows[max(0, first - prompt_tail) :]:
        shown = text.replace("\n", "⏎\n")
        if marks:
            opening, closing = _MARKS[state]
            out.append(f"{opening}{shown}{closing}")
        else:
            out.append(shown, style=_STYLE[state])
            out.append("\u200b")  # keeps token borders visible without changing the text
    legend = Text("\nlegend: ")
    for state in ("trained", "weighted", "masked", "prompt"):
        opening, closing = _MARKS[state] if marks else ("", "")
        legend.append(f" {opening}{state}{closing} ", style="" if marks else _STYLE[state])
        legend.append(" ")
    return out + legend


def render_html(processing: Any, ex: dict[str, Any], title: str = "") -> str:
    """A standalone HTML page; hovering a token shows its class and weight."""
    spans = []
    for text, cls, state, weight in token_rows(processing, ex):
        shown = html.escape(text).replace("\n", "⏎<br>")
        spans.append(f'<span class="t {state}" title="{cls} · {state} · w={weight:g}">{shown}</span>')
    css = "".join(f".{k}{{background:{v}}}" for k, v in _CSS.items())
    return (
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>body{{font-family:monospace;white-space:pre-wrap}}.t{{border-right:1px solid #fff}}{css}</style>"
        f"<h3>{html.escape(title)}</h3>"
        + "".join(f'<span class="t {k}">{k}</span> ' for k in _CSS)
        + "<hr>"
        + "".join(spans)
    )


@dataclass
class MaskStats:
    """Counts over a dataset: tokens per class, how many are trained (weight 1) and how
    many are kept in the loss at a lower weight (``--structural-weight``), fallbacks, drops."""

    examples: int = 0
    fallbacks: int = 0
    dropped: int = 0
    truncated: int = 0
    tokens: Counter = field(default_factory=Counter)
    trained: Counter = field(default_factory=Counter)
    weighted: Counter = field(default_factory=Counter)
    weight_sum: float = 0.0

    def add(self, ex: dict[str, Any]) -> None:
        """Count one built example."""
        self.examples += 1
        self.fallbacks += not ex["json_found"]
        self.truncated += ex["truncated"]
        kept = np.asarray(ex["labels"]) != -100
        if not kept.any():
            self.dropped += 1
        weights = np.asarray(ex["loss_weights"], dtype=np.float64)
        classes = np.asarray(ex["token_classes"])
        counted = ((self.tokens, slice(None)), (self.trained, kept & (weights >= 1.0)), (self.weighted, kept & (weights < 1.0)))
        for counter, where in counted:
            counts = np.bincount(classes[where])  # class codes are small; a sort (np.unique) cost 3x more
            for code in np.flatnonzero(counts):
                counter[TOKEN_CLASS_NAMES[int(code)]] += int(counts[code])
        self.weight_sum += float(weights.sum())

    def merge(self, other: MaskStats) -> None:
        """Add the counts of another stretch of the dataset (a chunk of a parallel scan)."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, Counter):
                mine.update(theirs)
            else:
                setattr(self, f.name, mine + theirs)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (written as ``mask_stats.json`` by training)."""
        reply = {k: v for k, v in self.tokens.items() if k not in ("prompt", "media")}
        return {
            "examples": self.examples,
            "json_fallbacks": self.fallbacks,
            "dropped_all_masked": self.dropped,
            "truncated": self.truncated,
            "tokens": dict(self.tokens),
            "trained": dict(self.trained),
            "weighted": dict(self.weighted),
            "fraction_trained": {k: self.trained[k] / v for k, v in reply.items() if v},
            "fraction_weighted": {k: self.weighted[k] / v for k, v in reply.items() if v and self.weighted[k]},
            "reply_tokens": sum(reply.values()),
            "trained_tokens": sum(self.trained.values()),
            "weighted_tokens": sum(self.weighted.values()),
            "loss_weight_sum": self.weight_sum,
        }

    def table(self, title: str = "mask statistics") -> Table:
        """A rich table: tokens per class, percent trained (and kept at a lower weight)."""
        table = Table(title=title)
        table.add_column("class")
        table.add_column("tokens", justify="right")
        table.add_column("trained", justify="right")
        table.add_column("% trained", justify="right")
        if self.weighted:
            table.add_column("% weighted", justify="right")
        for name in TOKEN_CLASS_NAMES.values():
            if self.tokens[name]:
                n, t = self.tokens[name], self.trained[name]
                row = [name, str(n), str(t), f"{100 * t / n:.1f}"]
                table.add_row(*row, *([f"{100 * self.weighted[name] / n:.1f}"] if self.weighted else []))
        d = self.as_dict()
        reply_trained = sum(v for k, v in self.trained.items() if k not in ("end_of_turn",))
        weighted = f" (+{d['weighted_tokens']} at weight < 1)" if self.weighted else ""
        table.caption = (
            f"{self.examples} examples · reply tokens trained {reply_trained}/{d['reply_tokens']}{weighted} · "
            f"JSON fallbacks {self.fallbacks} · dropped (nothing trained) {self.dropped} · truncated {self.truncated}"
        )
        return table

    def warnings(self) -> list[str]:
        """Problems a user must hear about."""
        out = []
        if self.fallbacks:
            out.append(f"{self.fallbacks} example(s) had no parseable JSON in the reply; their whole reply is trained")
        if self.dropped:
            out.append(f"{self.dropped} example(s) have no trained token (e.g. cut by --max-length) and are dropped")
        return out
