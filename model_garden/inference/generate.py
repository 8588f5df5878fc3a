"""Greedy generation with transformers from prompts a ``ChatCodec`` encoded.

``generate_batch`` left-pads the prompts' ids (``masking.batch.pad_batch``, the function
training batches go through), merges their image/video tensors, and decodes greedily,
each row constrained to its JSON schema when one is given (``inference.constrained``).
``by_prompt_length`` orders records so that a batch holds prompts of similar length: every
row is padded to the longest, and on SROIE's eval receipts in file order 19% of the
prompt tokens a batch of 10 computes are padding, 5% in this order.

The tokens every prompt of a batch starts with (a system prompt, instructions and a
schema pasted before the document: 172 of a SROIE prompt's 600 or so) are computed once
and their key/value cache shared by the rows (``shared_prefix_length``); each row's rest
is padded in between, so positions, computed from the attention mask, stay those of the
whole prompt.

Try it: ``python -m model_garden.inference.generate`` answers the bundled example.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessorList

from model_garden.grammar import ll_tokenizer
from model_garden.inference.confidence import Reply, value_scores
from model_garden.inference.constrained import json_schema_processor
from model_garden.masking.batch import pad_batch
from model_garden.models import text_tokenizer


def by_prompt_length(codec: Any, samples: Sequence[Any], indices: Sequence[int]) -> list[int]:
    """``indices`` ordered by the length of their sample's rendered prompt (characters,
    which track tokens closely and cost no tokenizing; ties keep their order)."""
    return sorted(indices, key=lambda i: len(codec.prompt_text(samples[i])[0]))


# A shorter shared prefix saves little, and its own forward pass has a fixed cost (a guess, not tuned).
MIN_SHARED_PREFIX = 32


def shared_prefix_length(model: Any, prompts: Sequence[dict[str, Any]]) -> int:
    """How many leading tokens all ``prompts`` share that can be computed once (0: none).

    Text prompts of a text model only: a vision-language model merges image features into
    the prompt and may derive positions from the whole of it (Qwen2-VL's 3D positions).
    The last token of every prompt stays out of the prefix: generation starts from it.
    """
    if len(prompts) < 2 or getattr(model.config, "vision_config", None) is not None or any(set(p) != {"input_ids"} for p in prompts):
        return 0
    ids = [list(p["input_ids"]) for p in prompts]
    shared = min(len(os.path.commonprefix(ids)), min(map(len, ids)) - 1)  # commonprefix compares any sequences
    return shared if shared >= MIN_SHARED_PREFIX else 0


def _with_shared_prefix(model: Any, prompts: list[dict[str, Any]], pad: int, shared: int) -> dict[str, Any]:
    """The batch as ``generate`` takes it after the prefix's cache is computed: each row is
    the prefix, left padding, then the row's own tokens; ``past_key_values`` holds the
    prefix once per row, so ``generate`` computes only the rest."""
    prefix = torch.tensor([prompts[0]["input_ids"][:shared]])
    rest = pad_batch([{"input_ids": list(p["input_ids"][shared:])} for p in prompts], pad, side="left")
    with torch.inference_mode():
        # Only the cache is wanted: the output layer over every prefix token would be about a
        # fifth of the pass's work (SmolLM2: 28M of its 135M weights).
        cache = model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
    cache.batch_repeat_interleave(len(prompts))
    rows = len(prompts)
    return {
        "input_ids": torch.cat([prefix.expand(rows, -1), rest["input_ids"]], dim=1),
        "attention_mask": torch.cat([torch.ones(rows, shared, dtype=rest["attention_mask"].dtype), rest["attention_mask"]], dim=1),
        "past_key_values": cache,
    }


def logit_width(model: Any) -> int:
    """Number of logits the model produces per step (its output embedding rows)."""
    return model.get_output_embeddings().weight.shape[0]


def generate_batch(
    model: Any,
    processing: Any,
    prompts: list[dict[str, Any]],
    *,
    schemas: list[dict | str | None] | None = None,
    max_new_tokens: int = 256,
    share_prefix: bool = True,
) -> list[Reply]:
    """Greedily generate one reply per prompt.

    Args:
        model: A causal LM or image-text-to-text model.
        processing: Its tokenizer or processor.
        prompts: Prompts as ``ChatCodec.encode_prompt`` returns them.
        schemas: Per prompt, the constraint of its reply: a JSON schema, or a Lark grammar
            (grounded decoding's); ``None`` (the list or an entry) decodes freely.
        max_new_tokens: Generation budget per reply.
        share_prefix: Compute the prompts' shared first tokens once (``shared_prefix_length``);
            ``False`` computes every prompt whole.

    Returns:
        Per prompt, a ``Reply``: the text without special tokens, the tokens generated
        before EOS (equal to ``max_new_tokens``: the reply was cut), and each value's
        scores (``inference.confidence``).
    """
    tokenizer = text_tokenizer(processing)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = model.generation_config.eos_token_id
    eos = tokenizer.eos_token_id if eos is None else eos
    eos_ids = set(eos) if isinstance(eos, list) else {eos}
    shared = shared_prefix_length(model, prompts) if share_prefix else 0
    batch = _with_shared_prefix(model, prompts, int(pad), shared) if shared else pad_batch(prompts, int(pad), side="left")
    # Free rows get a processor too: it logs their tokens' probabilities.
    guide = json_schema_processor(processing, schemas or [None] * len(prompts), logit_width(model), len(prompts), eos_token_id=eos)
    with torch.inference_mode():
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            use_cache=True,  # training turns the cache off for gradient checkpointing
            eos_token_id=eos,
            pad_token_id=pad,
            logits_processor=LogitsProcessorList([guide]),
        )
    guide.close(out[:, -1])
    lltok = ll_tokenizer(processing, logit_width(model), eos)
    replies = []
    for row, log in zip(out[:, batch["input_ids"].shape[1] :].tolist(), guide.rows.logs):
        n = next((i for i, t in enumerate(row) if t in eos_ids), len(row))
        text = tokenizer.decode(row[:n], skip_special_tokens=True)
        replies.append(Reply(text, n, value_scores(log, lambda t: lltok.decode_bytes([t]), eos_ids)))
    return replies


if __name__ == "__main__":
    from pathlib import Path

    from model_garden.data.jsonl import JsonlDataset
    from model_garden.masking.codec import ChatCodec
    from model_garden.models import load_model, load_processing

    bundled = Path(__file__).resolve().parent.parent / "assets" / "example.jsonl"
    codec = ChatCodec.for_data(load_processing("smollm2-135m"), bundled)
    sample = JsonlDataset(bundled).sample(0)
    print(generate_batch(load_model("smollm2-135m"), codec.processing, [codec.encode_prompt(sample)], schemas=[codec.schema(sample)], max_new_tokens=64))
