"""What grounding itself costs the decoder: llguidance's work per record and per token
for the plain schema, the grounded grammar, and the grounded grammar with the schema's
patterns, walked over each record's gold reply token by token (the tokens a model that
answers right would choose).

Reported per constraint: the compile time per record (the schema's matcher is cached
across records in ``predict``, a grounded grammar is built per record) and the time of
one token mask for one row (``fill_next_token_bitmask``, what ``GuidedRows.mask`` calls
per live row each step). This is single-threaded work, so it depends little on the
machine's load; set it against a decoding step (the ``hf`` engine's tokens/s after the
prefill in docs/benchmarks.md) to see its share of the decoding time.

Run: ``.venv/bin/python benchmarks/bench_grounding.py --dataset sroie/calib.jsonl [--limit 20]``
(a ``make-data sroie`` folder: its ``schema.json`` holds the date pattern, and the
pattern-free variant is the prompt's schema, ``sroie.SCHEMA``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import llguidance.numpy

from model_garden.data.schema import dataset_schema
from model_garden.data.sources import open_source
from model_garden.grammar import constraint_matcher
from model_garden.inference.grounding import grounded_grammar
from model_garden.models import load_processing, text_tokenizer


def _walk(tokenizer, constraint, reply_ids: list[int], vocab: int) -> tuple[float, list[float] | None]:
    start = time.perf_counter()
    matcher = constraint_matcher(tokenizer, constraint, vocab_size=vocab)
    compile_s = time.perf_counter() - start
    bitmask = llguidance.numpy.allocate_token_bitmask(1, vocab)
    masks = []
    for token in reply_ids:
        start = time.perf_counter()
        llguidance.numpy.fill_next_token_bitmask(matcher, bitmask, 0)
        masks.append(time.perf_counter() - start)
        if not matcher.consume_token(token):
            return compile_s, None  # the gold is no path of this grammar (a value outside the source or the pattern)
    return compile_s, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True, help="chat JSONL whose records name a source text")
    parser.add_argument("--model", default="smollm2-135m", help="whose tokenizer (a --base-model value)")
    parser.add_argument("--limit", type=int, default=20, help="records to walk")
    args = parser.parse_args()

    tokenizer = load_processing(args.model)
    encode = text_tokenizer(tokenizer)
    vocab = len(encode)
    schema = dataset_schema(args.dataset)
    if schema is None:
        raise SystemExit(f"{args.dataset}: no schema.json beside it")
    plain = {**schema, "properties": {k: {f: v for f, v in p.items() if f != "pattern"} for k, p in schema["properties"].items()}}
    source = open_source(args.dataset)
    samples = [source.sample(i) for i in range(min(args.limit, len(source)))]
    constraints = {
        "schema": lambda s: plain,
        "grounded": lambda s: grounded_grammar(plain, s.source_text()),
        "grounded + the schema's patterns": lambda s: grounded_grammar(schema, s.source_text()),
    }
    print(f"{len(samples)} records of {args.dataset}, {args.model}'s tokenizer, one thread")
    print(f"{'constraint':34s} {'compile per record':>20s} {'mask per token (median)':>25s} {'(mean)':>10s}")
    for name, make in constraints.items():
        compiles, masks, left = [], [], []
        for sample in samples:
            ids = encode(sample.reply, add_special_tokens=False)["input_ids"]
            c, m = _walk(tokenizer, make(sample), ids, vocab)
            compiles.append(c)
            if m is None:
                left.append(f"{args.dataset}:{sample.line}")
            else:
                masks += m
        print(f"{name:34s} {1e3 * statistics.median(compiles):17.1f} ms {1e3 * statistics.median(masks):22.3f} ms "
              f"{1e3 * statistics.mean(masks):7.3f} ms   ({len(masks)} tokens)")
        if left:  # timed on the others: a gold the grammar rejects has no path to walk
            print(f"  {len(left)} gold repl{'y' if len(left) == 1 else 'ies'} outside this grammar, left out: {', '.join(left)}")


if __name__ == "__main__":
    main()
