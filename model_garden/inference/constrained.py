"""Schema-constrained decoding: a JSON-Schema logits processor for Hugging Face ``generate``.

llguidance compiles the schema into a grammar and, at each step, computes the set of
tokens that keep the reply a valid prefix; every other logit is set to ``-inf``. The
grammar allows exactly the layout of :mod:`model_garden.jsonfmt` (``", "`` and ``": "``,
one line, no other whitespace), the layout training targets are written in, and object
properties in the order the schema lists them. Once the reply is complete only the EOS
token is allowed, so generation stops right after the closing brace.

The mask is as wide as the model's logits, which may exceed the tokenizer (SmolLM2 and
Qwen pad their embedding matrix); ids the tokenizer does not know are never allowed.
Schema features llguidance cannot enforce (``not``, ``if``/``then``, ``uniqueItems``,
unknown formats, look-around patterns, ...) raise :class:`SchemaError` with its message.

Try it: ``python -m model_garden.inference.constrained`` generates one constrained reply
with the embedded SmolLM2.
"""

from __future__ import annotations

from typing import Any

import llguidance
import llguidance.numpy
import numpy as np
import torch
from transformers import LogitsProcessor

from model_garden.grammar import JSON_OPTIONS, SchemaError, eos_ids, grammar_allows, matcher

__all__ = [
    "JSON_OPTIONS",
    "ConstrainedDecodingError",
    "JsonSchemaLogitsProcessor",
    "SchemaError",
    "grammar_allows",
    "json_schema_processor",
    "matcher",
]


class ConstrainedDecodingError(RuntimeError):
    """A generated token broke the grammar (another processor overrode the mask)."""


class JsonSchemaLogitsProcessor(LogitsProcessor):
    """Masks each row of a batch to the tokens its schema allows next.

    One matcher per row tracks that row's reply. The first call sees the (left-padded)
    prompts; every later call first feeds each row's newest token to its matcher. A row
    whose reply has ended (EOS) is left alone: ``generate`` pads it from then on.

    Args:
        matchers: One fresh matcher per batch row (see :func:`matcher`).
        vocab_size: Width of the model's logits.
        eos_token_ids: The tokens that end a reply (the matchers' EOS).
    """

    def __init__(self, matchers: list[llguidance.LLMatcher], vocab_size: int, eos_token_ids: tuple[int, ...]):
        self.matchers = matchers
        self.vocab_size = vocab_size
        self.eos = frozenset(eos_token_ids)
        self.bitmask = llguidance.numpy.allocate_token_bitmask(len(matchers), vocab_size)
        self.done = [False] * len(matchers)
        self._started = False

    def _consume(self, input_ids: torch.LongTensor) -> None:
        for row, token in enumerate(input_ids[:, -1].tolist()):
            if self.done[row]:
                continue
            m = self.matchers[row]
            if not m.consume_token(token):
                raise ConstrainedDecodingError(f"batch row {row}: token {token} broke the grammar: {m.get_error()}")
            # llguidance accepts EOS only once the reply is complete.
            self.done[row] = token in self.eos

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape != (len(self.matchers), self.vocab_size):
            raise ConstrainedDecodingError(
                f"logits of shape {tuple(scores.shape)}, expected ({len(self.matchers)}, {self.vocab_size}): "
                "one matcher per sequence and a mask as wide as the model's logits (beam search is not supported)"
            )
        if self._started:
            self._consume(input_ids)
        self._started = True
        self.bitmask.fill(-1)
        # Row by row on this thread: a mask takes tens of microseconds, and llguidance's
        # thread pool would compete with torch's threads (see docs/benchmarks.md).
        for row, m in enumerate(self.matchers):
            if not self.done[row]:
                llguidance.numpy.fill_next_token_bitmask(m, self.bitmask, row)
        blocked = np.unpackbits(self.bitmask.view(np.uint8), axis=1, count=self.vocab_size, bitorder="little") == 0
        if scores.device.type == "cpu" and scores.dtype == torch.float32:
            # Single-threaded numpy: torch would split the row over its threads, and on a
            # busy CPU waiting for them costs milliseconds per step.
            np.copyto(scores.numpy(), -np.inf, where=blocked)
            return scores
        return scores.masked_fill_(torch.from_numpy(blocked).to(scores.device), float("-inf"))


def json_schema_processor(
    tokenizer: Any,
    schema: dict | list[dict],
    vocab_size: int,
    batch_size: int,
    *,
    eos_token_id: int | list[int] | None = None,
) -> JsonSchemaLogitsProcessor:
    """A logits processor for one ``generate`` call that keeps every reply valid JSON
    for its schema.

    Args:
        tokenizer: A fast Hugging Face tokenizer, or a processor wrapping one.
        schema: One schema for every row, or a list with one schema per row.
        vocab_size: Width of the model's logits (``model.get_output_embeddings()``'s rows),
            not ``len(tokenizer)``.
        batch_size: Number of sequences ``generate`` runs together.
        eos_token_id: Token(s) ``generate`` stops on; default the tokenizer's EOS.

    Returns:
        A processor to pass as ``generate(..., logits_processor=LogitsProcessorList([p]))``;
        it holds per-row state, so make a new one for each call.

    Raises:
        SchemaError: A schema cannot be enforced.
    """
    schemas = schema if isinstance(schema, list) else [schema] * batch_size
    if len(schemas) != batch_size:
        raise ValueError(f"{len(schemas)} schemas for a batch of {batch_size}")
    matchers = [matcher(tokenizer, s, vocab_size=vocab_size, eos_token_id=eos_token_id) for s in schemas]
    return JsonSchemaLogitsProcessor(matchers, vocab_size, eos_ids(tokenizer, eos_token_id))


if __name__ == "__main__":
    from transformers import LogitsProcessorList

    from model_garden.models import load_model, load_processing

    tok, model = load_processing("smollm2-135m"), load_model("smollm2-135m")
    demo = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
            "required": ["city", "country"], "additionalProperties": False}
    prompt = tok.apply_chat_template([{"role": "user", "content": "Describe Paris as JSON."}], tokenize=False, add_generation_prompt=True)
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    width = model.get_output_embeddings().weight.shape[0]
    proc = json_schema_processor(tok, demo, width, 1)
    out = model.generate(**enc, max_new_tokens=40, do_sample=False, logits_processor=LogitsProcessorList([proc]))
    print(tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
