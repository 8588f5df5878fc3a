"""Decoded evaluation during training: what the model writes, not only its loss.

At every evaluation, ``DecodedEval`` decodes a fixed subset of the eval set (the first
``--eval-generate`` records) greedily under each record's JSON schema (grounded in its
source text with ``--eval-grounded``), exactly as ``predict`` would (the same codec-encoded prompts, the same ``generate_batch``), and scores
the replies with the project's extraction metrics (an invalid reply scores zero on every
field). The trainer logs the result beside the value loss as ``eval_json_valid``,
``eval_field_accuracy`` and ``eval_field_accuracy_filled`` (console, ``log.jsonl``,
``metrics.json``'s ``decoded_eval``, TensorBoard), and ``--metric-for-best`` /
``--early-stopping-patience`` can act on them.

Training cannot import this layer, so ``model-garden train`` (and ``compare``) hand
``decoded_eval_factory`` to ``training.run.train``.

Try it: ``model-garden train --dataset D --eval-dataset E --eval-generate 8 --eval-steps 10``.
"""

from __future__ import annotations

from typing import Any

import torch

from model_garden.data.sample import SOURCE_FIELD
from model_garden.data.sources import SampleView
from model_garden.evaluation.metrics import aggregate, score_records
from model_garden.evaluation.report import parse_output
from model_garden.inference.generate import by_prompt_length, generate_batch
from model_garden.inference.grounding import grounded_constraint
from model_garden.masking.codec import ChatCodec

DECODED_METRICS = ("json_valid", "field_accuracy", "field_accuracy_filled", "schema_valid")


class DecodedEval:
    """Decode and score a fixed eval subset with the model being trained.

    Args:
        codec: Encodes the prompts (the eval set's codec: its images and schema).
        source: The eval ``SampleSource``.
        n: Records decoded: the first ``n``.
        max_new_tokens: Generation budget per reply.
        batch_size: Prompts decoded together.
    """

    def __init__(self, codec: ChatCodec, source: Any, n: int, max_new_tokens: int, batch_size: int = 8, grounded: bool = False):
        self.codec = codec
        self.samples = SampleView(source, n)
        self.golds = [parse_output(s.reply) for s in self.samples]
        self.schemas = [codec.schema(s) for s in self.samples]
        if any(s is None for s in self.schemas):
            missing = next(s.where for s, schema in zip(self.samples, self.schemas) if schema is None)
            raise ValueError(f"--eval-generate: {missing} has no JSON schema to constrain decoding with (--schema FILE)")
        # The grammars decoding follows: the schemas', or each record's grounded one (built once).
        self.constraints: list[dict | str] = (
            [grounded_constraint(schema, s, SOURCE_FIELD) for s, schema in zip(self.samples, self.schemas)] if grounded else list(self.schemas)
        )
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.order = by_prompt_length(codec, self.samples, range(len(self.samples)))
        self.outputs: list[str] = []

    @torch.no_grad()
    def __call__(self, model: Any) -> dict[str, float | None]:
        """The decoded metrics of ``model`` (left in eval mode; the caller restores it)."""
        model.eval()
        self.outputs = [""] * len(self.samples)
        for lo in range(0, len(self.order), self.batch_size):  # batches of similar prompt length
            batch = self.order[lo : lo + self.batch_size]
            prompts = [self.codec.encode_prompt(self.samples[i]) for i in batch]
            replies = generate_batch(model, self.codec.processing, prompts, schemas=[self.constraints[i] for i in batch], max_new_tokens=self.max_new_tokens)
            for i, reply in zip(batch, replies):
                self.outputs[i] = reply.text
        preds = [parse_output(text) for text in self.outputs]
        metrics = aggregate(score_records(preds, self.golds, schema=self.schemas))
        return {k: metrics.get(k) for k in DECODED_METRICS}


def decoded_eval_factory(cfg: Any, codec: ChatCodec, source: Any, budget: int) -> DecodedEval | None:
    """The ``DecodedEval`` a run's options ask for (``--eval-generate``), or None."""
    n = min(cfg.run.eval_generate, len(source))
    if n <= 0:
        return None
    return DecodedEval(codec, source, n, budget, cfg.optim.batch_size, grounded=cfg.run.eval_grounded)
