"""The loss-mask engine: which tokens of a chat carry loss.

    from model_garden.masking import ChatCodec, MaskConfig, build_example
    ex = build_example(tokenizer_or_processor, messages, MaskConfig(strategy="conservative"))
    ex = ChatCodec.for_data(tokenizer, "train.jsonl").encode_train(sample, MaskConfig(strategy="moderate"))
"""

from model_garden.masking.codec import ChatCodec, build_example
from model_garden.masking.json_spans import json_spans
from model_garden.masking.render import render_prompt
from model_garden.masking.strategies import (
    STRATEGIES,
    TOKEN_CLASS_NAMES,
    MaskConfig,
    MaskingError,
)
from model_garden.models import is_processor, text_tokenizer

__all__ = [
    "ChatCodec",
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
