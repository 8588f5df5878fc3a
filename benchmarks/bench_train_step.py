"""Training-step cost of selective loss, and memory of the chunked loss.

1. Step time (forward + backward, LoRA, bf16 autocast on CPUs that support it) of plain
   SFT (the model's own loss over full logits, labels = response-only) against
   model-garden's weighted chunked loss for each strategy, on the same batch, taking
   turns. Goal: selective <= 1.03x plain.
2. Peak memory of the loss alone for batch 4 x 512 tokens x SmolLM2's 49,152-row
   vocabulary: chunked (``training.loss``) against the plain path (full float32 logits,
   ``cross_entropy``, backward). Each is measured in a fresh process as the growth of
   peak RSS over the process's state before the loss. Goal: chunked <= 0.3x plain.

Run: ``python benchmarks/bench_train_step.py [--steps 6] [--seq 512] [--batch 4]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ("none", "conservative", "moderate", "aggressive")


def _batch(tok, cfg_strategy: str, batch: int, seq: int):
    import json as _json

    from model_garden.masking import MaskConfig, build_example
    from model_garden.training.collate import StructuredOutputDataCollator

    rows = [_json.loads(line) for line in (REPO / "model_garden/assets/example.jsonl").read_text(encoding="utf-8").splitlines()]
    feats = []
    for i in range(batch):
        messages = _json.loads(_json.dumps(rows[i % len(rows)]["messages"]))
        ex = build_example(tok, messages, MaskConfig(cfg_strategy))
        pad = seq - len(ex["input_ids"])  # lengthen the prompt side to exactly `seq` tokens
        for key, fill in (("input_ids", tok.pad_token_id), ("attention_mask", 1), ("labels", -100), ("loss_weights", 0.0)):
            ex[key] = [fill] * pad + list(ex[key])
        ex["token_classes"] = [0] * pad + list(ex["token_classes"])
        feats.append(ex)
    return StructuredOutputDataCollator(processing=tok)(feats)


def step_times(steps: int, batch: int, seq: int) -> dict[str, float]:
    import torch
    from peft import LoraConfig, get_peft_model

    from model_garden.models import load_model, load_processing
    from model_garden.training.model_setup import DEFAULT_LORA_TARGET, use_bf16
    from model_garden.training.trainer import loss_at_output_layer, output_layer

    tok = load_processing("smollm2-135m")
    model = get_peft_model(load_model("smollm2-135m"), LoraConfig(r=16, lora_alpha=32, target_modules=DEFAULT_LORA_TARGET, task_type="CAUSAL_LM"))
    model.train()
    bf16 = use_bf16("auto")
    batches = {s: _batch(tok, s, batch, seq) for s in STRATEGIES}
    head = output_layer(model)

    def plain() -> None:
        b = batches["none"]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
        loss.backward()

    def selective(strategy: str) -> None:
        b = batches[strategy]
        norm = (b["loss_weights"][:, 1:] * (b["labels"][:, 1:] != -100)).sum()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            with loss_at_output_layer(head, b["labels"], b["loss_weights"], norm, 1024) as box:
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False)
        box.loss.backward()

    runs = {"plain SFT (model loss, full logits)": plain, **{f"selective: {s}": (lambda s=s: selective(s)) for s in STRATEGIES}}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for name, fn in runs.items():  # warm-up
        fn()
        model.zero_grad(set_to_none=True)
    for _ in range(steps):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
    return {name: statistics.median(t) for name, t in times.items()}


def _loss_memory(kind: str, batch: int, seq: int) -> None:
    """In a child process: print the peak-RSS growth of one loss + backward, in MB."""
    import torch
    import torch.nn.functional as F

    from model_garden.training.loss import weighted_lm_loss

    torch.manual_seed(0)
    vocab, hidden_size = 49152, 576
    head = torch.nn.Linear(hidden_size, vocab, bias=False)
    hidden = torch.randn(batch, seq, hidden_size, requires_grad=True)
    labels = torch.randint(0, vocab, (batch, seq))
    weights = torch.ones(batch, seq)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if kind == "plain":
        logits = head(hidden).float()
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())
    else:
        loss = weighted_lm_loss(hidden, head, labels, weights, float(batch * (seq - 1)))
    loss.backward()
    print(json.dumps({"mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))


def loss_memory(batch: int, seq: int) -> dict[str, float]:
    out = {}
    for kind in ("plain", "chunked"):
        done = subprocess.run(
            [sys.executable, __file__, "--memory-child", kind, "--batch", str(batch), "--seq", str(seq)],
            capture_output=True, text=True, check=True,
        )
        out[kind] = json.loads(done.stdout.strip().splitlines()[-1])["mb"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--memory-child", choices=("plain", "chunked"))
    args = parser.parse_args()
    if args.memory_child:
        _loss_memory(args.memory_child, args.batch, args.seq)
        return
    mem = loss_memory(args.batch, args.seq)
    print(f"loss memory, batch {args.batch} x {args.seq} x 49152 vocab (peak RSS growth):")
    print(f"  plain logits path  {mem['plain']:8.1f} MB")
    print(f"  chunked            {mem['chunked']:8.1f} MB   ({mem['chunked'] / mem['plain']:.2f}x plain)")
    times = step_times(args.steps, args.batch, args.seq)
    base = times["plain SFT (model loss, full logits)"]
    print(f"\ntraining step, SmolLM2-135M LoRA, batch {args.batch} x {args.seq} (median of {args.steps}):")
    for name, t in times.items():
        print(f"  {name:40s} {t:6.2f} s   {t / base:.3f}x plain")


if __name__ == "__main__":
    main()
