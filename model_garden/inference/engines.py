"""Greedy decoding of token-id prompts with an inference engine, the reply constrained by
the same grammar as the ``hf`` engine (a JSON schema's, or grounded decoding's Lark
grammar). Prompts are token ids (what ``ChatCodec`` renders), so every engine decodes
exactly the same prompt.

* ``onnxruntime-genai``: a folder from ``model-garden export RUN --format onnx``. The
  engine computes each step's logits; the mask, the greedy choice and the token log are
  the ``hf`` engine's (``inference.confidence.GuidedRows``, llguidance with the same
  ``JSON_OPTIONS``), so the two engines report the same confidences. A batch of prompts
  is decoded together, each with its own grammar, right-padded with a token id no prompt
  holds (the engine tells padding from prompt by the pad id, and SmolLM2's pad token is
  its end-of-turn token, which every chat prompt has).
* ``vllm``: a merged folder (``--format merged``), guided by vLLM's ``guidance`` backend
  (llguidance): a schema goes in with ``JSON_OPTIONS`` as its ``x-guidance`` options
  (:func:`model_garden.grammar.with_guidance`), a grounded grammar as a Lark grammar.
  vLLM needs a supported GPU; it is imported only when used and has not been run on the
  CPU-only machine this was written on.

Try it: ``python -m model_garden.inference.engines ONNX_DIR`` decodes a short constrained
reply with an exported model.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoTokenizer

from model_garden.extras import MissingExtra
from model_garden.grammar import SchemaError, constraint_matcher, ll_tokenizer, with_guidance
from model_garden.inference.confidence import GuidedRows, Reply, value_scores


@functools.lru_cache(maxsize=2)
def _ort_model(model_dir: str, threads: int | None, pad: int) -> tuple[Any, tuple[int, ...], int]:
    try:  # an optional dependency (the onnx extra)
        import onnxruntime_genai as og
    except ImportError:
        raise MissingExtra("--engine onnxruntime-genai needs the onnx extra: pip install 'model-garden[onnx]'") from None
    genai_config = Path(model_dir) / "genai_config.json"
    if not genai_config.is_file():
        raise FileNotFoundError(f"{model_dir}: no genai_config.json; make one with model-garden export RUN --format onnx")
    config = og.Config(model_dir)
    overlay: dict[str, Any] = {"pad_token_id": pad}
    if threads is not None:
        overlay["decoder"] = {"session_options": {"intra_op_num_threads": threads}}
    config.overlay(json.dumps({"model": overlay}))
    spec = json.loads(genai_config.read_text(encoding="utf-8"))["model"]
    eos = spec["eos_token_id"]
    return og.Model(config), tuple(eos) if isinstance(eos, list) else (eos,), int(spec["vocab_size"])


def _pad_id(tokenizer: Any, prompt_ids: list[list[int]]) -> int:
    """A token id no prompt holds: ONNX Runtime GenAI tells padding from prompt by the pad
    id, and SmolLM2's own pad token is its end-of-turn token, which every chat prompt has."""
    used = {t for ids in prompt_ids for t in ids}
    for candidate in [tokenizer.pad_token_id, *sorted(tokenizer.all_special_ids), len(tokenizer) - 1]:
        if candidate is not None and candidate not in used:
            return int(candidate)
    return next(t for t in range(len(tokenizer)) if t not in used)


@functools.lru_cache(maxsize=4)
def _hf_tokenizer(model_dir: str) -> Any:
    # Decoding with the Hugging Face tokenizer gives the hf engine's text, byte for byte.
    return AutoTokenizer.from_pretrained(model_dir)


def generate_ort(
    model_dir: str | Path,
    prompt_ids: list[list[int]],
    schemas: list[dict | str | None] | None,
    max_new_tokens: int,
    *,
    threads: int | None = None,
) -> list[Reply]:
    """Greedily decode each prompt with ONNX Runtime GenAI (CPU).

    The prompts are decoded as one batch. The engine computes the logits; the grammar and
    the token log are the ``hf`` engine's own (``inference.confidence.GuidedRows``): the
    masked logits go back to the engine, which takes the greedy token, so both engines
    apply the same mask to the same logits and report the same confidences.

    Args:
        model_dir: A folder exported with ``--format onnx`` (``genai_config.json``, model,
            tokenizer).
        prompt_ids: Token ids of each prompt, ending with the assistant header.
        schemas: Per prompt, the constraint of its reply: a JSON schema, or a Lark grammar
            (grounded decoding's); ``None`` (the list or an entry) decodes freely.
        max_new_tokens: Generation budget per reply.
        threads: ONNX Runtime's intra-op threads; ``None`` keeps its default (one per
            physical core). On a shared machine pass the idle cores
            (``model_garden.cores.default_threads``), as ``predict`` does
            for torch.

    Returns:
        Per prompt, a ``Reply`` (text, tokens generated before EOS, value scores).

    Raises:
        SchemaError: a constraint cannot be enforced (the message names the prompt).
    """
    import onnxruntime_genai as og  # optional; _ort_model below says how to install it

    if schemas is not None and len(schemas) != len(prompt_ids):
        raise ValueError(f"{len(schemas)} schemas for {len(prompt_ids)} prompts")
    tokenizer = _hf_tokenizer(str(model_dir))
    pad = _pad_id(tokenizer, prompt_ids)
    model, eos, vocab = _ort_model(str(model_dir), threads, pad)
    lltok = ll_tokenizer(tokenizer, vocab, list(eos))
    matchers = []
    for i in range(len(prompt_ids)):
        constraint = None if schemas is None else schemas[i]
        try:
            matchers.append(None if constraint is None else constraint_matcher(tokenizer, constraint, vocab_size=vocab, eos_token_id=list(eos)))
        except SchemaError as exc:
            raise SchemaError(f"prompt {i}: {exc}") from None
    rows = GuidedRows(matchers, vocab, eos)
    batch = len(prompt_ids)
    longest = max(map(len, prompt_ids))
    # Right-padded: ONNX Runtime GenAI takes each row's logits at its last real token.
    ids = np.full((batch, longest), pad, dtype=np.int32)
    for row, prompt in enumerate(prompt_ids):
        ids[row, : len(prompt)] = prompt
    params = og.GeneratorParams(model)
    # The KV cache is sized by max_length; the builder's default is the whole context.
    params.set_search_options(max_length=longest + max_new_tokens, do_sample=False, num_beams=1, batch_size=batch)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    new: list[list[int]] = [[] for _ in prompt_ids]
    for _ in range(max_new_tokens):
        logits = np.array(generator.get_logits(), dtype=np.float32).reshape(batch, vocab)
        rows.mask(logits)
        # The engine picks the greedy token of the masked logits (the first of equal maxima).
        generator.set_logits(logits)
        generator.generate_next_token()
        tokens = [int(t) for t in np.asarray(generator.get_next_tokens()).reshape(batch)]
        live = [not d for d in rows.done]
        rows.consume(tokens)
        for row, token in enumerate(tokens):
            if live[row]:
                new[row].append(token)
        if all(rows.done):
            break
    replies = []
    for row, tokens in enumerate(new):
        n = next((j for j, t in enumerate(tokens) if t in eos), len(tokens))
        scores = value_scores(rows.logs[row], lambda t: lltok.decode_bytes([t]), frozenset(eos))
        replies.append(Reply(tokenizer.decode(tokens[:n], skip_special_tokens=True), n, scores))
    return replies


@functools.lru_cache(maxsize=1)
def _vllm_engine(model_dir: str) -> Any:
    try:  # an optional dependency that needs a GPU
        from vllm import LLM
    except ImportError:
        raise MissingExtra("--engine vllm needs vLLM (a supported GPU): pip install 'model-garden[vllm]'") from None
    # Only the guidance backend reads the schema's x-guidance layout; no silent fallback.
    # Prefix caching computes the prompt's shared instructions and schema once, as the
    # hf engine does within a batch (said explicitly: its default has changed between versions).
    return LLM(model=model_dir, enable_prefix_caching=True, structured_outputs_config={"backend": "guidance", "disable_fallback": True})


def _vllm_guide(constraint: dict | str | None) -> Any:
    from vllm.sampling_params import StructuredOutputsParams  # optional (GPU); _vllm_engine says how to install it

    if constraint is None:
        return None
    if isinstance(constraint, str):  # grounded decoding's Lark grammar
        return StructuredOutputsParams(grammar=constraint)
    return StructuredOutputsParams(json=with_guidance(constraint))


def generate_vllm(model_dir: str | Path, prompt_ids: list[list[int]], schemas: list[dict | str | None] | None, max_new_tokens: int) -> list[Reply]:
    """Greedily decode the prompts with vLLM (one batch), guided by the ``guidance``
    backend (a JSON schema, or grounded decoding's Lark grammar). Same arguments as
    :func:`generate_ort`; ``model_dir`` is a merged export (``--format merged``). The
    replies carry no value scores: vLLM's log-probabilities do not say which tokens the
    grammar forced. Untested here: vLLM needs a GPU this machine lacks."""
    if schemas is not None and len(schemas) != len(prompt_ids):
        raise ValueError(f"{len(schemas)} schemas for {len(prompt_ids)} prompts")
    llm = _vllm_engine(str(model_dir))  # first: it says how to install vLLM where it is missing
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = [
        SamplingParams(
            temperature=0.0,
            max_tokens=max_new_tokens,
            skip_special_tokens=True,
            structured_outputs=_vllm_guide(None if schemas is None else schemas[i]),
        )
        for i in range(len(prompt_ids))
    ]
    outputs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], params, use_tqdm=False)
    replies = []
    for out in outputs:
        completion = out.outputs[0]
        # A reply that ended on EOS lists it last (finish "stop" without a stop string).
        ended_on_eos = completion.finish_reason == "stop" and completion.stop_reason is None
        replies.append(Reply(completion.text, len(completion.token_ids) - int(ended_on_eos), {}))
    return replies


if __name__ == "__main__":
    import sys

    demo = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}
    tok = _hf_tokenizer(sys.argv[1])
    prompt = tok.apply_chat_template([{"role": "user", "content": "Name a city as JSON."}], add_generation_prompt=True, tokenize=False)
    print(generate_ort(sys.argv[1], [tok(prompt, add_special_tokens=False)["input_ids"]], [demo], 40, threads=1))
