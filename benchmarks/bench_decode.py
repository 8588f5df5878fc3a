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

With ``--engine``, it times engines instead: each decodes the same prompt token ids
(``--dataset``, default the bundled example), ``--batch-size`` prompts per call, greedy
and constrained by the same schema (``--decodings grounded``: each record's grounded grammar;
``--decodings plain grounded``: both, paired in one process, with what grounding costs).
Reported per engine: the tokens per second of whole calls (prefill included, as a user
sees them); the prefill time, from a call that makes one token; the decoding speed
without it; the tokens per second over all batches together; the time of one decoding
step of the whole batch (which, unlike tokens/s, does not depend on how unequal the
replies are in length); and how many replies equal
the ``hf`` engine's (its batches in file order). ``hf-whole-prompts`` is the ``hf`` engine
computing every prompt whole, without sharing the batch's common prefix. ``--by-length`` adds each engine again on
batches formed in order of prompt length, as ``predict`` forms them. ONNX Runtime GenAI
runs on exports of ``--model`` made for the run (``--quantize fp32 int8 int4``). Both engines get ``--threads`` threads (default: the cores the
load average leaves idle, as ``predict`` does).

Run: ``.venv/bin/python benchmarks/bench_decode.py --engine hf onnxruntime-genai [--threads 1]``
Goal: ONNX Runtime GenAI int4 at least 3x the ``hf`` engine's tokens/s on an idle CPU.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from model_garden.cli.common import BUNDLED_EXAMPLE
from model_garden.data.jsonl import JsonlDataset
from model_garden.data.schema import schema_for
from model_garden.inference.constrained import json_schema_processor
from model_garden.inference.generate import logit_width
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


def compare_engines(args: argparse.Namespace, tmp: Path) -> None:
    """Tokens per second of each engine on the same prompts, constrained, one sequence;
    the ONNX exports are written under ``tmp``."""
    from model_garden.export import export
    from model_garden.inference.engines import generate_ort
    from model_garden.cores import default_threads
    from model_garden.inference.generate import by_prompt_length, generate_batch
    from model_garden.data.sample import SOURCE_FIELD
    from model_garden.inference.grounding import grounded_constraint
    from model_garden.inference.loading import load_for_inference
    from model_garden.masking.codec import ChatCodec

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    model, tokenizer = load_for_inference(args.model)
    codec = ChatCodec.for_data(tokenizer, args.dataset)
    samples = list(JsonlDataset(args.dataset))[: args.limit]
    prompts = [codec.encode_prompt(s) for s in samples]
    ids = [p["input_ids"] for p in prompts]
    constraints = {"plain": [codec.schema(s) for s in samples]}
    if "grounded" in args.decodings:
        constraints["grounded"] = [grounded_constraint(codec.schema(s), s, SOURCE_FIELD) for s in samples]
    engines, decoding_of = {}, {}
    for decoding in args.decodings:  # the same engine under each constraint: a paired comparison in one process
        tag, cons = ("" if decoding == "plain" else f", {decoding}"), constraints[decoding]
        for engine, share in (("hf", True), ("hf-whole-prompts", False)):
            if engine in args.engine:
                name = f"hf{tag}" if share else f"hf, whole prompts{tag}"
                engines[name] = lambda idx, budget, c=cons, share=share: generate_batch(
                    model, tokenizer, [prompts[i] for i in idx], schemas=[c[i] for i in idx], max_new_tokens=budget, share_prefix=share)
                decoding_of[name] = decoding
        for precision in args.quantize if "onnxruntime-genai" in args.engine else ():
            folder = tmp / precision
            if not folder.exists():
                export(args.model, folder, "onnx", quantize=precision)
            engines[f"onnxruntime-genai {precision}{tag}"] = lambda idx, budget, f=folder, c=cons: generate_ort(
                f, [ids[i] for i in idx], [c[i] for i in idx], budget, threads=threads)
            decoding_of[f"onnxruntime-genai {precision}{tag}"] = decoding

    def batched(order: list[int]) -> list[list[int]]:
        return [order[lo : lo + args.batch_size] for lo in range(0, len(order), args.batch_size)]

    batches = {name: batched(list(range(len(ids)))) for name in engines}
    if args.by_length:  # each engine again, its batches formed in order of prompt length (as predict forms them)
        order = by_prompt_length(codec, samples, range(len(samples)))
        for name in list(engines):
            engines[f"{name}, by length"], batches[f"{name}, by length"] = engines[name], batched(order)
            decoding_of[f"{name}, by length"] = decoding_of[name]
    replies = {name: {} for name in engines}
    for name, run in engines.items():  # warm-up
        for b in batches[name]:
            replies[name].update(zip(b, (r[:2] for r in run(b, args.max_new_tokens))))
    whole: dict[str, list[float]] = {name: [] for name in engines}
    prefill: dict[str, list[float]] = {name: [] for name in engines}
    decode: dict[str, list[float]] = {name: [] for name in engines}
    # Seconds per decoding step of the whole batch: unlike tokens/s, it does not depend on
    # how unequal the replies' lengths are (a batch steps until its longest reply ends).
    step: dict[str, list[float]] = {name: [] for name in engines}
    totals = {name: [0, 0.0] for name in engines}  # new tokens, seconds: whole calls over all batches
    names = list(engines)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # who goes first rotates
            for batch in batches[name]:
                start = time.perf_counter()
                engines[name](batch, 1)
                first = time.perf_counter() - start
                start = time.perf_counter()
                got = [reply[:2] for reply in engines[name](batch, args.max_new_tokens)]
                seconds = time.perf_counter() - start
                assert got == [replies[name][i] for i in batch], f"{name} is not deterministic on batch {batch}"
                tokens = sum(n for _, n in got)
                steps = max(n + (n < args.max_new_tokens) for _, n in got)  # the EOS is a decoding step too
                whole[name].append(tokens / seconds)
                prefill[name].append(first)
                decode[name].append(tokens * (steps - 1) / steps / (seconds - first))
                step[name].append((seconds - first) / max(steps - 1, 1))
                totals[name][0] += tokens
                totals[name][1] += seconds
    print(f"{args.model}, CPU, torch and ONNX Runtime threads: {threads}; {len(ids)} prompts (about {statistics.mean(map(len, ids)):.0f} tokens) "
          f"x {args.rounds} rounds, batch {args.batch_size}, greedy, constrained ({' and '.join(args.decodings)}), "
          f"up to {args.max_new_tokens} new tokens; medians over batches")
    print(f"{'engine':44} {'tokens/s':>9} {'vs hf':>6} {'prefill s':>10} {'decode tokens/s':>16} {'vs hf':>6} {'all batches':>12} {'vs hf':>6} {'ms/step':>8}  same replies as hf")
    for name in names:
        # The reference is the hf engine in file order under the same constraint.
        hf = next((n for n in names if n.split(", ")[0] == "hf" and "by length" not in n and "whole" not in n and decoding_of[n] == decoding_of[name]), None)
        speed, fast = statistics.median(whole[name]), statistics.median(decode[name])
        overall = totals[name][0] / totals[name][1]
        ratio = f"{speed / statistics.median(whole[hf]):6.2f}" if hf else "     -"
        decode_ratio = f"{fast / statistics.median(decode[hf]):6.2f}" if hf else "     -"
        overall_ratio = f"{overall / (totals[hf][0] / totals[hf][1]):6.2f}" if hf else "     -"
        same = f"{sum(replies[name][i] == replies[hf][i] for i in range(len(ids)))}/{len(ids)}" if hf else "-"
        print(f"{name:44} {speed:9.1f} {ratio} {statistics.median(prefill[name]):10.3f} {fast:16.1f} {decode_ratio} {overall:12.1f} {overall_ratio} {1e3 * statistics.median(step[name]):8.1f}  {same}")
    if len(args.decodings) > 1:  # what grounding costs, per engine, paired: the same batches in the same process
        print(f"{'grounded / plain, time':44} {'whole call':>11} {'all batches':>12} {'ms/step':>8} {'tokens':>14}")
        for name in names:
            if decoding_of[name] == "grounded":
                plain = name.replace(", grounded", "")
                print(f"{plain:44} {statistics.median(whole[plain]) / statistics.median(whole[name]):10.3f}x "
                      f"{(totals[plain][0] / totals[plain][1]) / (totals[name][0] / totals[name][1]):11.3f}x "
                      f"{statistics.median(step[name]) / statistics.median(step[plain]):7.3f}x "
                      f"{totals[name][0] / args.rounds:6.0f} / {totals[plain][0] / args.rounds:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating constrained/free rounds")
    parser.add_argument("--batch-size", type=int, default=1, help="prompts decoded together")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--engine", nargs="+", choices=["hf", "hf-whole-prompts", "onnxruntime-genai"],
                        help="compare these engines' constrained tokens/s instead")
    parser.add_argument("--quantize", nargs="+", choices=["fp32", "int8", "int4"], default=["fp32", "int8", "int4"],
                        help="ONNX Runtime GenAI exports to time (with --engine)")
    parser.add_argument("--threads", type=int, help="torch and ONNX Runtime threads (with --engine); default: the idle cores")
    parser.add_argument("--model", default="smollm2-135m", help="run or model to time (with --engine)")
    parser.add_argument("--dataset", default=BUNDLED_EXAMPLE, help="prompts and schemas (with --engine); default the bundled example")
    parser.add_argument("--limit", type=int, help="only the first N prompts (with --engine)")
    parser.add_argument("--decodings", nargs="+", choices=["plain", "grounded"], default=["plain"],
                        help="constrain by the schema (plain), by each record's grounded grammar, or both, paired (with --engine)")
    parser.add_argument("--by-length", action="store_true",
                        help="also time each engine on batches formed in order of prompt length, as predict forms them (with --engine)")
    args = parser.parse_args()
    if args.engine:
        with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
            compare_engines(args, Path(tmp))
        return

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
