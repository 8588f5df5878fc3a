"""How much ``build_example`` costs over plain chat-template tokenization, and how it
compares with the design notes' prefix re-encoding mask.

Examples are SROIE receipts read from ``../shared/data/sroie`` (never copied): the
prompt is the receipt's OCR text, the reply its gold JSON; about 400-600 SmolLM2 tokens
each. Every method runs over the same examples; each method's time is the sum, over
chunks of 10 chats, of its best of ``--repeat`` turns on the chunk (the machine is shared
and its speed drifts; see ``best_times``).

* ``plain``: ``apply_chat_template(messages, tokenize=False)`` then ``tokenizer(text)``:
  what any SFT trainer pays anyway.
* ``encode_train (strategy)``: the codec (renders once, tokenizes once, masks).
* ``reference``: plain tokenization plus the notes' ``_create_structural_mask``: for each
  structural regex match, re-encode the prefix up to the match's start and end to find
  its token positions; over the reply alone, and over the whole decoded example as the
  notes' collator does (its labels are the whole sequence).

``--data forms`` uses synthetic vehicle-registration forms instead (about 1,000 tokens,
replies of about 270 tokens with many structural matches); ``--data long`` the SROIE
receipts with a long reply: the gold fields plus 28 line items (each OCR line and an
amount), about 1,100 reply tokens.

Run: ``python benchmarks/bench_masking.py [--n 100] [--repeat 5] [--data sroie|forms]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from model_garden.data.sample import Sample
from model_garden.jsonfmt import dumps
from model_garden.masking import ChatCodec, MaskConfig
from model_garden.models import load_processing

SHARED = Path(os.environ.get("MODEL_GARDEN_SHARED", Path(__file__).resolve().parents[2] / "shared"))
PROMPT = "Extract the company, date, address and total of this receipt as JSON.\n\n"
# The notes' STRUCTURAL_PATTERNS (punctuation and schema keys).
STRUCTURAL_PATTERNS = [r"[\{\}\[\]:,]", r'"(\w+)":\s*']
STRATEGIES = {
    "none": MaskConfig(strategy="none"),
    "conservative": MaskConfig(strategy="conservative"),
    "moderate": MaskConfig(strategy="moderate"),
    "aggressive": MaskConfig(strategy="aggressive"),
    "custom": MaskConfig(strategy="custom", semantic_patterns=(r'"(?:company|total)":\s*"([^"]*)"',)),
}


def sroie_chats(root: Path, n: int) -> list[list[dict]]:
    """The first ``n`` receipts as chats: OCR lines in, gold JSON out."""
    chats = []
    for key in sorted((root / "key").glob("*.json"))[:n]:
        lines = (root / "box" / f"{key.stem}.csv").read_text(encoding="utf-8", errors="replace").splitlines()
        ocr = "\n".join(line.split(",", 8)[8] for line in lines if line.count(",") >= 8)
        gold = json.loads(key.read_text(encoding="utf-8"))
        chats.append([{"role": "user", "content": PROMPT + ocr}, {"role": "assistant", "content": dumps(gold)}])
    return chats


def long_chats(root: Path, n: int, items: int = 28) -> list[list[dict]]:
    """SROIE receipts whose reply also lists ``items`` line items (OCR text and an amount,
    cycling through the receipt's lines): replies of about 1,100 tokens."""
    rng = random.Random(0)
    chats = []
    for messages in sroie_chats(root, n):
        ocr = messages[0]["content"][len(PROMPT) :].splitlines() or ["ITEM"]
        gold = json.loads(messages[1]["content"])
        gold["items"] = [{"description": ocr[k % len(ocr)], "quantity": rng.randint(1, 5), "amount": f"{rng.uniform(0.5, 80):.2f}"} for k in range(items)]
        chats.append([messages[0], {"role": "assistant", "content": dumps(gold)}])
    return chats


def forms_chats(n: int) -> list[list[dict]]:
    """``n`` synthetic vehicle-registration forms (the notes' kind of data): a prompt with
    the answer's JSON Schema and the transcription, a nested JSON reply of ~270 tokens."""
    import tempfile

    from model_garden.data.forms import make_forms
    from model_garden.data.jsonl import iter_records

    folder = Path(tempfile.mkdtemp())
    make_forms(folder, n=max(n, 10), seed=0, val_fraction=0.0, test_fraction=0.0)
    return [r.messages for r in iter_records(folder / "text" / "train.jsonl")][:n]


def plain(tok, messages):
    return tok(tok.apply_chat_template(messages, tokenize=False))["input_ids"]


def prefix_mask(tok, text: str) -> list[bool]:
    """The notes' ``_create_structural_mask``: re-encode ``text`` up to each structural
    match to find the match's token positions (quadratic in the text's length)."""
    n = len(tok.encode(text))
    mask = [False] * n
    for pattern in STRUCTURAL_PATTERNS:
        for m in re.finditer(pattern, text):
            start = len(tok.encode(text[: m.start()]))
            end = len(tok.encode(text[: m.end()]))
            for i in range(start, min(end, n)):
                mask[i] = True
    return mask


def reference_reply(tok, messages):
    """Plain tokenization, then the notes' mask over the reply alone."""
    return plain(tok, messages), prefix_mask(tok, messages[-1]["content"])


def reference_example(tok, messages):
    """Plain tokenization, then the notes' mask over the decoded labels; in the notes'
    collator the labels are the whole example (only padding is -100 there)."""
    ids = plain(tok, messages)
    return ids, prefix_mask(tok, tok.decode(ids))


def best_times(methods: dict, chats, repeat: int, chunk: int = 10) -> dict[str, float]:
    """Best seconds for each method over all chats.

    The chats are cut into chunks of ``chunk``; the methods take turns on each chunk, in
    a new random order each time, ``repeat`` times, and a method's time is the sum of its
    best time per chunk. This machine's speed drifts by up to 1.6x in phases of about a
    second (other tenants' load): turns of a few milliseconds put every method in the same
    phase, where turns of a whole pass over the chats did not. The order is shuffled
    because a method that follows a different code path starts with colder caches (in a
    fixed rotation one method always followed the plain tokenizer and paid for it).
    """
    parts = [chats[i : i + chunk] for i in range(0, len(chats), chunk)]
    names = list(methods)
    best = {name: [float("inf")] * len(parts) for name in names}
    rng = random.Random(0)
    for _ in range(repeat):
        for c, part in enumerate(parts):
            for name in rng.sample(names, len(names)):
                fn = methods[name]
                start = time.perf_counter()
                for messages in part:
                    fn(messages)
                best[name][c] = min(best[name][c], time.perf_counter() - start)
    return {name: sum(times) for name, times in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="receipts to use")
    parser.add_argument("--repeat", type=int, default=5, help="passes per method; the best is kept")
    parser.add_argument("--data", choices=("sroie", "forms", "long"), default="sroie", help="SROIE receipts, synthetic forms, or receipts with 28 line items")
    args = parser.parse_args()

    tok = load_processing("smollm2-135m")
    readers = {"sroie": lambda: sroie_chats(SHARED / "data" / "sroie", args.n), "forms": lambda: forms_chats(args.n), "long": lambda: long_chats(SHARED / "data" / "sroie", args.n)}
    chats = readers[args.data]()
    lengths = [len(plain(tok, c)) for c in chats]
    replies = [len(tok(c[-1]["content"])["input_ids"]) for c in chats]
    codec = ChatCodec(tok)
    for messages in chats[:3]:  # warm caches (template compilation, special ids)
        codec.encode_train(Sample(messages), STRATEGIES["conservative"])

    methods = {
        "plain apply_chat_template + tokenize": lambda m: plain(tok, m),
    }
    for name, cfg in STRATEGIES.items():
        methods[f"encode_train ({name})"] = lambda m, c=cfg: codec.encode_train(Sample(m), c)
    methods["reference: prefix re-encoding of the reply"] = lambda m: reference_reply(tok, m)
    times = best_times(methods, chats, args.repeat)
    times.update(best_times({"reference: prefix re-encoding of the example": lambda m: reference_example(tok, m)}, chats, 1))
    rows = list(times.items())

    base = rows[0][1]
    worst = max(t for name, t in rows if name.startswith("encode_train"))
    title = f"{len(chats)} {args.data} chats, {statistics.mean(lengths):.0f} tokens on average ({min(lengths)}-{max(lengths)}), replies {statistics.mean(replies):.0f}"
    table = Table(title=title)
    table.add_column("method")
    table.add_column("ms / example", justify="right")
    table.add_column("x plain", justify="right")
    table.add_column("x slowest encode_train", justify="right")
    for name, seconds in rows:
        table.add_row(name, f"{1000 * seconds / len(chats):.3f}", f"{seconds / base:.2f}", f"{seconds / worst:.2f}")
    console = Console()
    console.print(table)
    console.print(f"slowest encode_train / plain: {worst / base:.2f}x (goal <= 1.15x)")
    for name, seconds in rows[-2:]:
        console.print(f"{name} / slowest encode_train: {seconds / worst:.1f}x (goal >= 50x)")


if __name__ == "__main__":
    main()
