"""The loss-mask engine: which tokens of a chat carry loss.

    from model_garden.masking import MaskConfig, build_example, json_spans
    ex = build_example(tokenizer_or_processor, messages, MaskConfig(strategy="conservative"))
"""

from model_garden.masking.build import build_example, is_processor, text_tokenizer
from model_garden.masking.json_spans import json_spans
from model_garden.masking.render import render_prompt
from model_garden.masking.strategies import (
    STRATEGIES,
    TOKEN_CLASS_NAMES,
    MaskConfig,
    MaskingError,
)

__all__ = [
    "MaskConfig",
    "MaskingError",
    "STRATEGIES",
    "TOKEN_CLASS_NAMES",
    "build_example",
    "is_processor",
    "json_spans",
    "render_prompt",
    "text_tokenizer",
]
