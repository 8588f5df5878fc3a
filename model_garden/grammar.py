"""The decoding grammar of a JSON schema: one llguidance matcher per reply.

Training (the ``schema-forced`` strategy walks a reply through it), constrained decoding
with transformers, and every exported model share this grammar, so it lives in a leaf
module that depends on nothing else in the package. The layout is
:mod:`model_garden.jsonfmt`'s (``", "`` and ``": "``, one line), enforced by the same
``JSON_OPTIONS`` that :func:`with_guidance` writes into a schema's ``x-guidance`` key for
engines that read it (ONNX Runtime GenAI, vLLM, llama.cpp all run llguidance).

Try it: ``python -m model_garden.grammar`` walks a reply through a schema's grammar.
"""

from __future__ import annotations

import functools
import json
import warnings
from typing import Any

import llguidance
import llguidance.hf

from model_garden.jsonfmt import ITEM_SEPARATOR, KEY_SEPARATOR
from model_garden.models import text_tokenizer

# Applied after the schema's own "x-guidance" options, so a schema cannot loosen the layout.
JSON_OPTIONS = {
    "item_separator": ITEM_SEPARATOR,
    "key_separator": KEY_SEPARATOR,
    "whitespace_flexible": False,
    "lenient": False,
}


class SchemaError(ValueError):
    """The schema cannot be enforced by constrained decoding."""


def with_guidance(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with ``JSON_OPTIONS`` as its ``x-guidance`` options: the form to ship
    beside a model, so any llguidance engine decodes exactly the trained layout."""
    return {**schema, "x-guidance": {**schema.get("x-guidance", {}), **JSON_OPTIONS}}


@functools.lru_cache(maxsize=8)
def _ll_tokenizer(tokenizer: Any, vocab_size: int, eos: tuple[int, ...]) -> llguidance.LLTokenizer:
    # Building the token trie takes about half a second, so one per tokenizer.
    return llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=list(eos))


def _validated(lltok: llguidance.LLTokenizer, grammar: str, what: str) -> llguidance.LLMatcher:
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, lltok)
    if is_error:
        # llguidance appends the whole grammar to some messages; a grounded one holds the source.
        raise SchemaError(f"{what} cannot be enforced by constrained decoding: {messages[0][:500]}")
    for message in messages:
        warnings.warn(f"{what}: {message}", stacklevel=4)
    return llguidance.LLMatcher(lltok, grammar, log_level=0)


@functools.lru_cache(maxsize=64)
def _compiled(lltok: llguidance.LLTokenizer, schema_json: str) -> llguidance.LLMatcher:
    grammar = llguidance.LLMatcher.grammar_from_json_schema(schema_json, overrides=JSON_OPTIONS)
    return _validated(lltok, grammar, "the JSON schema")


def schema_json(schema: Any) -> str:
    """A schema as the JSON text llguidance compiles (key order kept: properties appear
    in the order the schema lists them)."""
    if not isinstance(schema, dict):
        raise SchemaError(f"a JSON schema must be an object, not {type(schema).__name__}")
    return json.dumps(schema, ensure_ascii=False)


def eos_ids(tokenizer: Any, eos_token_id: int | list[int] | None = None) -> tuple[int, ...]:
    """The token(s) that end a reply: ``eos_token_id`` if given, else the tokenizer's EOS."""
    eos = text_tokenizer(tokenizer).eos_token_id if eos_token_id is None else eos_token_id
    if eos is None:
        raise SchemaError(f"{type(tokenizer).__name__} has no EOS token to end a constrained reply with")
    return tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)


def ll_tokenizer(tokenizer: Any, vocab_size: int | None, eos_token_id: int | list[int] | None) -> llguidance.LLTokenizer:
    tokenizer = text_tokenizer(tokenizer)
    vocab_size = vocab_size or len(tokenizer)
    if vocab_size < len(tokenizer):
        raise SchemaError(f"the model has {vocab_size} logits but the tokenizer {len(tokenizer)} tokens")
    return _ll_tokenizer(tokenizer, vocab_size, eos_ids(tokenizer, eos_token_id))


def matcher(tokenizer: Any, schema: dict, *, vocab_size: int | None = None, eos_token_id: int | list[int] | None = None) -> llguidance.LLMatcher:
    """A fresh grammar matcher for one reply (the compiled grammar is cached per schema).

    Args:
        tokenizer: A fast Hugging Face tokenizer, or a processor wrapping one.
        schema: The JSON schema the reply must follow.
        vocab_size: Width of the model's logits; default the tokenizer's size.
        eos_token_id: Token(s) that end the reply; default the tokenizer's EOS.

    Raises:
        SchemaError: llguidance cannot enforce the schema (its message says why).
    """
    return _compiled(ll_tokenizer(tokenizer, vocab_size, eos_token_id), schema_json(schema)).deep_copy()


def lark_matcher(tokenizer: Any, lark: str, *, vocab_size: int | None = None, eos_token_id: int | list[int] | None = None) -> llguidance.LLMatcher:
    """A matcher for a Lark grammar written for one reply (grounded decoding's, which
    holds the record's source text, so it is compiled each time: a few milliseconds).
    Arguments and errors as :func:`matcher`."""
    lltok = ll_tokenizer(tokenizer, vocab_size, eos_token_id)
    return _validated(lltok, llguidance.LLMatcher.grammar_from_lark(lark), "the grounded grammar")


def constraint_matcher(tokenizer: Any, constraint: dict | str, **kwargs: Any) -> llguidance.LLMatcher:
    """A matcher for one reply's constraint: a JSON schema (dict) or a Lark grammar (str,
    grounded decoding's). Keyword arguments as :func:`matcher`."""
    return lark_matcher(tokenizer, constraint, **kwargs) if isinstance(constraint, str) else matcher(tokenizer, constraint, **kwargs)


def grammar_allows(tokenizer: Any, schema: dict | str, text: str) -> bool:
    """Whether ``text`` is a complete reply the grammar accepts (a schema's, or a Lark
    grammar), fed token by token as the tokenizer splits it (a check that training
    targets and the grammar agree)."""
    m = constraint_matcher(tokenizer, schema)
    ids = text_tokenizer(tokenizer)(text, add_special_tokens=False)["input_ids"]
    return m.consume_tokens(ids) and m.is_accepting()


if __name__ == "__main__":
    from model_garden.models import load_processing

    tok = load_processing("smollm2-135m")
    demo = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}
    for reply in ('{"city": "Paris"}', '{"city":"Paris"}'):
        print(f"{reply!r:24} allowed: {grammar_allows(tok, demo, reply)}")
