"""Time per generated token of schema-constrained versus free greedy decoding.

Both decode the same prompts (the bundled example's, with the embedded SmolLM2-135M) for
the same number of steps: the constrained run stops at its EOS, the free run (with EOS
disabled) then makes exactly as many steps, so both attend over the same lengths. A probe processor stamps the clock at every step; the time per token is the
gap between stamps, so the shared prompt prefill is left out. The runs alternate, and the
medians are compared, because other work on a shared machine makes single runs noisy.
The time spent inside the JSON-schema processor itself (mask computation and applying
it) is reported too; it does not depend on the machine's load.

Run: ``.venv/bin/python benchmarks/bench_decode.py [--rounds 3] [--batch-size 1]``
Goal: constrained decoding costs at most 10% more time per token on CPU.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from model_garden.cli.common import BUNDLED_EXAMPLE
from model_garden.data.jsonl import JsonlDataset
from model_garden.data.schema import schema_for
from model_garden.inference.constrained import json_schema_processor
from model_garden.inference.predict import logit_width
from model_garden.masking import render_prompt
from model_garden.models import load_model, load_processing


class StepClock(LogitsProcessor):
    """Records when each decoding step reaches the logits processors."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def __call__(self, input_ids, scores):
        self.stamps.append(time.perf_counter())
        return scores


class Timed(LogitsProcessor):
    """Accumulates the time spent in another processor."""

    def __init__(self, inner: LogitsProcessor) -> None:
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def __call__(self, input_ids, scores):
        start = time.perf_counter()
        out = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def decode(model, enc, processors: list, steps: int, *, stop_at_eos: bool) -> list[float]:
    """Generate and return the per-step times (seconds) after the first step."""
    config = copy.deepcopy(model.generation_config)
    config.update(max_new_tokens=steps, do_sample=False, pad_token_id=config.eos_token_id)
    if not stop_at_eos:
        # Exactly `steps` steps; min_new_tokens would add a processor of its own to time.
        config.eos_token_id = None
    clock = StepClock()
    with torch.inference_mode():
        out = model.generate(**enc, generation_config=config, logits_processor=LogitsProcessorList([*processors, clock]))
    assert out.shape[1] - enc["input_ids"].shape[1] == len(clock.stamps)
    return [b - a for a, b in zip(clock.stamps, clock.stamps[1:])]


def decode_constrained(model, tokenizer, enc, schemas: list[dict], max_new_tokens: int) -> tuple[list[float], Timed]:
    """Constrained generation: per-step times and the processor's own timer."""
    timed = Timed(json_schema_processor(tokenizer, schemas, logit_width(model), len(schemas)))
    return decode(model, enc, [timed], max_new_tokens, stop_at_eos=True), timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating constrained/free rounds")
    parser.add_argument("--batch-size", type=int, default=1, help="prompts decoded together")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()

    tokenizer, model = load_processing("smollm2-135m"), load_model("smollm2-135m").eval()
    data = JsonlDataset(BUNDLED_EXAMPLE)
    prompts = [render_prompt(tokenizer, r.messages, multimodal=False)[0] for r in data]
    schemas = [schema_for(BUNDLED_EXAMPLE, r) for r in data]
    batches = []
    for lo in range(0, len(prompts) - args.batch_size + 1, args.batch_size):
        idx = range(lo, lo + args.batch_size)
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        batches.append((enc, [schemas[i] for i in idx]))

    # A first constrained pass warms up and tells how many steps each batch takes (greedy
    # decoding repeats itself), so the rounds can alternate which mode runs first.
    lengths = [len(decode_constrained(model, tokenizer, enc, s, args.max_new_tokens)[0]) + 1 for enc, s in batches]
    free_steps, constrained_steps, timers = [], [], []
    for r in range(args.rounds):
        for (enc, batch_schemas), n in zip(batches, lengths):
            for mode in ("constrained", "free") if r % 2 == 0 else ("free", "constrained"):
                if mode == "free":
                    free_steps += decode(model, enc, [], n, stop_at_eos=False)
                else:
                    steps, timer = decode_constrained(model, tokenizer, enc, batch_schemas, args.max_new_tokens)
                    constrained_steps += steps
                    timers.append(timer)

    free, constrained = statistics.median(free_steps), statistics.median(constrained_steps)
    mask = sum(t.seconds for t in timers) / sum(t.calls for t in timers)
    print(f"SmolLM2-135M, CPU, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"{len(constrained_steps)} constrained and {len(free_steps)} free decoding steps")
    print(f"free        {free * 1e3:7.2f} ms/token (median)  {args.batch_size / free:6.1f} tokens/s")
    print(f"constrained {constrained * 1e3:7.2f} ms/token (median)  {args.batch_size / constrained:6.1f} tokens/s")
    print(f"ratio       {constrained / free:7.3f}  (goal <= 1.10)")
    print(f"JSON-schema processor {mask * 1e3:.3f} ms/step = {mask / free:.1%} of a free step")


if __name__ == "__main__":
    main()
