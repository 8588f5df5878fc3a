"""Masking policy: which characters of a reply carry loss, for each strategy.

A strategy is a set of character classes (see ``json_spans``) that are trained; the
rest of the reply is *structural*: masked, or kept at ``structural_weight``. ``custom``
trains only the capture groups of ``semantic_patterns``.

Try it: ``python -m model_garden.masking.strategies``
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from model_garden.masking.json_spans import (
    CLASS_NAMES,
    KEY,
    KEY_QUOTE,
    LITERAL,
    NUMBER,
    OTHER,
    STRING,
    VALUE_QUOTE,
    WHITESPACE,
    classify,
)

# Token classes outside the reply text (the reply's own classes are 1..9).
PROMPT, END_OF_TURN, MEDIA = 0, 10, 11
TOKEN_CLASS_NAMES = {PROMPT: "prompt", **CLASS_NAMES, END_OF_TURN: "end_of_turn", MEDIA: "media"}

_VALUES = {VALUE_QUOTE, STRING, NUMBER, LITERAL}
TRAINED_CLASSES: dict[str, frozenset[int]] = {
    "none": frozenset(CLASS_NAMES),
    "conservative": frozenset(_VALUES | {KEY_QUOTE, KEY, OTHER}),
    "moderate": frozenset(_VALUES | {OTHER}),
    "aggressive": frozenset(_VALUES),
}
# Value edges (see _train_value_edges), looked up by the class pair of two neighbouring
# characters, (left << 4) | right (class codes are below 16).
_BEFORE_VALUE = np.zeros(256, dtype=np.uint8)
_AFTER_NUMBER = np.zeros(256, dtype=np.uint8)
for _left in range(16):
    for _right in range(16):
        _BEFORE_VALUE[(_left << 4) | _right] = _left == WHITESPACE and _right in _VALUES
        _AFTER_NUMBER[(_left << 4) | _right] = _left == NUMBER and _right != NUMBER
STRATEGIES = ("none", "conservative", "moderate", "aggressive", "custom", "schema-forced")
TRAIN_ON = ("all_assistant", "last_assistant")


def selective_strategy(use_selective_loss: bool, semantic_patterns: tuple[str, ...] | list[str] = (), conservative: bool = True) -> str:
    """The strategy the design notes' on/off switch stands for: off is response-only;
    on trains the patterns' capture groups when there are patterns, else masks JSON
    punctuation (``conservative``) or also keys."""
    if not use_selective_loss:
        return "none"
    if semantic_patterns:
        return "custom"
    return "conservative" if conservative else "moderate"


class MaskingError(ValueError):
    """An example cannot be masked as asked; the message names the example."""


@dataclass(frozen=True)
class MaskConfig:
    """Which tokens of a conversation carry loss.

    Attributes:
        strategy: ``none`` trains the whole reply (response-only); ``conservative`` masks
            JSON punctuation and whitespace; ``moderate`` also masks keys; ``aggressive``
            trains only JSON values; ``custom`` trains only the capture groups of
            ``semantic_patterns``; ``schema-forced`` masks the tokens the decoding grammar
            of ``schema`` forces.
        semantic_patterns: Regexes over the reply for ``custom`` (the whole match where
            a pattern has no group), e.g. ``'"contents":\\s*"([^"]*)"'``.
        structural_weight: Loss weight of the reply tokens a strategy masks. 0 masks them
            (label -100); a value in (0, 1] keeps their label at this weight.
        train_on: ``all_assistant`` trains every assistant turn, ``last_assistant`` only
            the final one. A message with ``"weight": 0`` is never trained.
        schema: For ``schema-forced``: the JSON schema of the replies (the one constrained
            decoding uses); the reply tokens its grammar forces are masked. Can also be
            given per example to ``build_example``.
        require_json: Whether a JSON strategy refuses a reply without JSON (the scan's
            check) rather than train it whole; ``--mask-strategy auto`` trains it whole.
    """

    strategy: str = "none"
    semantic_patterns: tuple[str, ...] = ()
    structural_weight: float = 0.0
    train_on: str = "all_assistant"
    schema: dict | None = field(default=None, compare=False)
    require_json: bool = field(default=True, compare=False)
    _compiled: tuple[re.Pattern, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--mask-strategy must be one of {', '.join(STRATEGIES)}; got {self.strategy!r}")
        if self.train_on not in TRAIN_ON:
            raise ValueError(f"--train-on must be one of {', '.join(TRAIN_ON)}; got {self.train_on!r}")
        if not 0.0 <= self.structural_weight <= 1.0:
            raise ValueError(f"--structural-weight must be in [0, 1]; got {self.structural_weight}")
        patterns = tuple(self.semantic_patterns)
        object.__setattr__(self, "semantic_patterns", patterns)
        if self.strategy == "custom" and not patterns:
            raise ValueError("--mask-strategy custom needs at least one --semantic-patterns regex")
        compiled = []
        for p in patterns:
            try:
                compiled.append(re.compile(p))
            except re.error as exc:
                raise ValueError(f"--semantic-patterns {p!r} is not a valid regex: {exc}") from None
        object.__setattr__(self, "_compiled", tuple(compiled))

    @cached_property
    def trained_lut(self) -> np.ndarray:
        """``lut[class_code]`` is 1 where the strategy trains that reply class."""
        lut = np.zeros(256, dtype=np.uint8)
        lut[list(TRAINED_CLASSES.get(self.strategy, ()))] = 1
        return lut


def reply_char_masks(reply: str, cfg: MaskConfig) -> tuple[np.ndarray, np.ndarray, bool]:
    """Classify a reply's characters and mark the trained ones.

    Args:
        reply: The reply text.
        cfg: The masking policy.

    Returns:
        ``(classes, trained, json_found)``: per-character class codes, a 0/1 array of
        trained characters, and whether a JSON document was found. Without one, the
        JSON strategies fall back to training the whole reply.
    """
    classes = np.empty(len(reply), dtype=np.uint8)
    found = classify(reply, classes)
    if cfg.strategy == "custom":
        trained = np.zeros(len(reply), dtype=np.uint8)
        for pattern in cfg._compiled:
            for m in pattern.finditer(reply):
                groups = range(1, (m.re.groups or 0) + 1) or (0,)
                for g in groups:
                    if m.start(g) >= 0:
                        trained[m.start(g) : m.end(g)] = 1
        return classes, trained, found
    if not found or cfg.strategy == "schema-forced":  # schema-forced decides per token, later
        return classes, np.ones(len(reply), dtype=np.uint8), found
    trained = cfg.trained_lut[classes]
    if cfg.strategy != "none":
        _train_value_edges(classes, trained)
    return classes, trained, True


def _train_value_edges(classes: np.ndarray, trained: np.ndarray) -> None:
    """Train the characters next to a value, though their class is structural.

    A whitespace character just before a value: a tokenizer may give it a token of its
    own (SmolLM2 and Qwen2 split `": 3` into `":`, ` `, `3`), and that token is where the
    model chooses a number over a string or ``null``; masked, the model never learns to
    emit a number there. The character just after a number: its token ends the number,
    as a string's closing quote ends a string.
    """
    pair = (classes[:-1] << 4) | classes[1:]
    trained[:-1] |= _BEFORE_VALUE[pair]
    trained[1:] |= _AFTER_NUMBER[pair]


if __name__ == "__main__":
    reply = '```json\n{"Marque": {"contents": "PEUGEOT", "confidence_score": null}}\n```'
    for strategy in ("none", "conservative", "moderate", "aggressive"):
        cls, trained, _ = reply_char_masks(reply, MaskConfig(strategy=strategy))
        shown = "".join(c if t else "·" for c, t in zip(reply, trained))
        print(f"{strategy:13s} {shown!r}")
