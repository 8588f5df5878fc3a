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

import torch
from transformers import LogitsProcessor

from model_garden.grammar import JSON_OPTIONS, SchemaError, constraint_matcher, eos_ids, grammar_allows, matcher
from model_garden.inference.confidence import ConstrainedDecodingError, GuidedRows

__all__ = [
    "JSON_OPTIONS",
    "ConstrainedDecodingError",
    "JsonSchemaLogitsProcessor",
    "SchemaError",
    "grammar_allows",
    "json_schema_processor",
    "matcher",
]


class JsonSchemaLogitsProcessor(LogitsProcessor):
    """Masks each row of a batch to the tokens its grammar allows next, and logs each
    chosen token's probability (``rows.logs``, see ``inference.confidence``).

    The first call sees the (left-padded) prompts; every later call first feeds each
    row's newest token to its grammar. A row whose reply has ended (EOS) is left alone:
    ``generate`` pads it from then on. After ``generate``, ``close`` logs the last token.

    Args:
        rows: The batch's grammar state (one matcher per row; ``None`` decodes a row freely).
    """

    def __init__(self, rows: GuidedRows):
        self.rows = rows
        self._started = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape != (len(self.rows.matchers), self.rows.vocab_size):
            raise ConstrainedDecodingError(
                f"logits of shape {tuple(scores.shape)}, expected ({len(self.rows.matchers)}, {self.rows.vocab_size}): "
                "one matcher per sequence and a mask as wide as the model's logits (beam search is not supported)"
            )
        if self._started:
            self.rows.consume(input_ids[:, -1].tolist())
        self._started = True
        if scores.device.type == "cpu" and scores.dtype == torch.float32:
            # In place and single-threaded numpy: torch would split the row over its
            # threads, and on a busy CPU waiting for them costs milliseconds per step.
            self.rows.mask(scores.numpy())
            return scores
        blocked = self.rows.mask(scores.float().cpu().numpy())
        return scores.masked_fill_(torch.from_numpy(blocked).to(scores.device), float("-inf"))

    def close(self, last_tokens: torch.LongTensor) -> None:
        """Log the tokens ``generate`` chose after the last call."""
        self.rows.close(last_tokens.tolist())


def json_schema_processor(
    tokenizer: Any,
    schema: dict | str | list[dict | str | None],
    vocab_size: int,
    batch_size: int,
    *,
    eos_token_id: int | list[int] | None = None,
) -> JsonSchemaLogitsProcessor:
    """A logits processor for one ``generate`` call that keeps every reply valid for its
    constraint: a JSON schema, or a Lark grammar (grounded decoding's).

    Args:
        tokenizer: A fast Hugging Face tokenizer, or a processor wrapping one.
        schema: One constraint for every row, or a list with one per row (``None``:
            that row decodes freely, its tokens still logged).
        vocab_size: Width of the model's logits (``model.get_output_embeddings()``'s rows),
            not ``len(tokenizer)``.
        batch_size: Number of sequences ``generate`` runs together.
        eos_token_id: Token(s) ``generate`` stops on; default the tokenizer's EOS.

    Returns:
        A processor to pass as ``generate(..., logits_processor=LogitsProcessorList([p]))``;
        it holds per-row state, so make a new one for each call.

    Raises:
        SchemaError: A constraint cannot be enforced.
    """
    constraints = schema if isinstance(schema, list) else [schema] * batch_size
    if len(constraints) != batch_size:
        raise ValueError(f"{len(constraints)} schemas for a batch of {batch_size}")
    matchers = [None if c is None else constraint_matcher(tokenizer, c, vocab_size=vocab_size, eos_token_id=eos_token_id) for c in constraints]
    return JsonSchemaLogitsProcessor(GuidedRows(matchers, vocab_size, eos_ids(tokenizer, eos_token_id)))


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
