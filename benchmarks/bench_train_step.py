"""Training-step cost of selective loss, and memory of the chunked loss.

1. Step time (forward + backward, LoRA, bf16 autocast on CPUs that support it) of plain
   SFT (the model's own loss over full logits, labels = response-only) against
   model-garden's weighted chunked loss for each strategy, on the same batch, taking
   turns. Goal: selective <= 1.03x plain.
2. Peak memory of the loss alone for batch 4 x 512 tokens x SmolLM2's 49,152-row
   vocabulary: chunked (``training.loss``) against the plain path (full float32 logits,
   ``cross_entropy``, backward). Each is measured in a fresh process as the growth of
   peak RSS over the process's state before the loss. Goal: chunked <= 0.3x plain.

3. ``--vs-trl``: training side by side with TRL (issue 26 item 2). In the same run, two
   fresh child processes (one per trainer, the same torch thread count) train the same
   model on the same data file with the same LoRA (r=16, alpha=32, dropout 0, every
   linear layer of the language model), batch size, max length, learning rate and
   optimizer (AdamW, linear decay, no warm-up, clip 1.0), the same number of optimizer
   steps and the same gradient checkpointing (non-reentrant) and bf16 setting:

   * model-garden: the real ``model_garden.training.run.train`` path, default recipe
     (``--mask-strategy auto``: moderate at structural weight 0.1; length-grouped
     batches);
   * TRL: ``SFTTrainer`` with ``SFTConfig(completion_only_loss=True, packing=False)`` and
     ``peft_config=LoraConfig(...)``, on the records as conversational prompt/completion
     (the last assistant turn is the completion).

   No evaluation, no checkpoint inside the timed steps, no logging before the last step.
   The first ``--warmup`` optimizer steps are trained but not timed. Printed as JSON: per
   trainer the non-padding tokens per second, the median step time, the peak RSS, and the
   ratios ours / TRL. How each figure is counted: ``COUNTING`` below (also in the JSON).

Run: ``python benchmarks/bench_train_step.py [--steps 6] [--seq 512] [--batch 4]``
     ``python benchmarks/bench_train_step.py --vs-trl --data sroie/train.jsonl [--steps 20] [--warmup 2]``
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


# -- 3. side by side with TRL (--vs-trl) -------------------------------------------------

TRAINERS = ("model-garden", "trl")
RESULT_MARK = "BENCH-RESULT "
EXAMPLE_DATA = REPO / "model_garden/assets/example.jsonl"
COUNTING = {
    "tokens": "non-padding tokens (attention_mask == 1, prompt and reply alike) of the batches the trainer's "
    "collator produced for the timed optimizer steps (after --warmup), recorded by a thin wrapper around each "
    "trainer's own collator (grad accumulation 1: batch k is step k); cross-checked against transformers' "
    "num_input_tokens_seen ('non_padding'), which counts the same thing over all steps",
    "tokens_per_s": "timed tokens / the sum of the timed steps' wall times",
    "step_time": "wall time from the end of one optimizer step to the end of the next (on_step_end to "
    "on_step_end): fetching and collating the batch (model-garden encodes and masks examples on access, TRL "
    "tokenized them before training), forward, backward, clipping, optimizer and scheduler",
    "loss_tokens": "label positions that carry loss (labels[:, 1:] != -100); model-garden's also include "
    "structural tokens at weight 0.1",
    "peak_rss_mb": "the child's ru_maxrss read at the end of the last timed step, after the high-water mark was "
    "reset (/proc/self/clear_refs) once both libraries were imported and the model and tokenizer loaded, so the "
    "transient peak of loading the model is not in it (peak_reset false: not reset, the whole process's peak)",
    "peak_over_load_mb": "peak_rss_mb - rss_after_load_mb (VmRSS once the model and tokenizer are loaded): what "
    "the trainer (its data, adapter, optimizer, activations) adds on top of the loaded model",
}


def _rss_now_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


class BatchRecorder:
    """Wraps a trainer's collator and records, in order, what each batch holds (the
    trainer sees the same batch; attribute reads such as ``dropped`` go to the collator)."""

    def __init__(self, collator: Any):
        self.collator = collator
        self.batches: list[dict[str, int]] = []

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        batch = self.collator(features)
        ids, labels = batch["input_ids"], batch["labels"]
        mask = batch.get("attention_mask")
        self.batches.append({
            "tokens": int(mask.sum()) if mask is not None else int(ids.numel()),
            "padded": int(ids.numel()),
            "loss_tokens": int((labels[:, 1:] != -100).sum()),
            "examples": int(ids.shape[0]),
        })
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["collator"], name)


def _step_clock(total: int):
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        """Wall time of every optimizer step, the peak RSS at the end of the last one, the
        trainer's own token counter, and the adapter's trainable parameter count."""

        def __init__(self):
            self.times: list[float] = []
            self.mark = 0.0
            self.peak_mb = 0.0
            self.tokens_seen = 0
            self.trainable = 0

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if model is not None:
                self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            self.mark = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.times.append(now - self.mark)
            self.mark = now
            if state.global_step == total:
                self.peak_mb = _peak_rss_mb()
                self.tokens_seen = int(state.num_input_tokens_seen)

    return StepClock()


def _trl_records(path: str) -> list[dict[str, Any]]:
    """The data file's records as TRL takes them: prompt/completion records as they are;
    a chat (``messages``) as conversational prompt/completion, the last turn (an assistant
    reply) being the completion."""
    records = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if "prompt" in row and "completion" in row:
            records.append({"prompt": row["prompt"], "completion": row["completion"]})
        elif "messages" in row and row["messages"] and row["messages"][-1].get("role") == "assistant":
            messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
            records.append({"prompt": messages[:-1], "completion": messages[-1:]})
        else:
            raise ValueError(f"{path}:{n}: --vs-trl needs 'messages' ending with an assistant turn, or 'prompt' + 'completion'")
    return records


def _train_ours(o: argparse.Namespace, model: Any, tok: Any, out: Path, clock: Any) -> BatchRecorder:
    from rich.console import Console

    from model_garden.training import run
    from model_garden.training.config import TrainConfig

    total = o.warmup + o.steps
    cfg = TrainConfig.from_options(
        base_model=o.model, dataset=o.data, output=str(out / "run"), max_steps=total, batch_size=o.batch,
        max_length=o.max_length, lr=o.lr, gradient_checkpointing=o.gradient_checkpointing,
        group_by_length=o.group_by_length in ("each", "both"), report_to="none",
        logging_steps=total + 1, save_steps=total + 1, seed=0,  # no log and no checkpoint inside the timed steps
    )
    holder: dict[str, BatchRecorder] = {}
    original = run.setup_trainer

    def setup_trainer(*args: Any, **kwargs: Any):
        trainer, signals = original(*args, **kwargs)
        trainer.data_collator = holder["rec"] = BatchRecorder(trainer.data_collator)
        return trainer, signals

    run.setup_trainer = setup_trainer
    try:
        run.train(cfg, console=Console(stderr=True, quiet=True), callbacks=[clock], model=model, processing=tok)
    finally:
        run.setup_trainer = original
    return holder["rec"]


def _train_trl(o: argparse.Namespace, model: Any, tok: Any, out: Path, clock: Any) -> BatchRecorder:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from model_garden.training.model_setup import DEFAULT_LORA_TARGET, use_bf16

    total = o.warmup + o.steps
    args = SFTConfig(
        output_dir=str(out / "trl"), per_device_train_batch_size=o.batch, gradient_accumulation_steps=1,
        learning_rate=o.lr, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, optim="adamw_torch",
        max_grad_norm=1.0, max_steps=total, seed=0, data_seed=0,
        bf16=use_bf16("auto"),  # TRL's own default is True; model-garden's auto: only where the CPU has bf16
        activation_checkpointing=o.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if o.gradient_checkpointing else None,
        max_length=o.max_length, packing=False, completion_only_loss=True,
        train_sampling_strategy="group_by_length" if o.group_by_length == "both" else "random",
        eval_strategy="no", save_strategy="no", logging_steps=total + 1, report_to=[], disable_tqdm=True,
        dataloader_num_workers=0, include_num_input_tokens_seen="non_padding", use_cpu=True,
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=DEFAULT_LORA_TARGET, task_type="CAUSAL_LM")
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(_trl_records(o.data)), processing_class=tok,
        peft_config=lora, callbacks=[clock],
    )
    trainer.data_collator = recorder = BatchRecorder(trainer.data_collator)
    trainer.train()
    return recorder


def _trainer_child(o: argparse.Namespace) -> None:
    """In a fresh process: train with one trainer and print its figures as one JSON line."""
    import torch

    torch.set_num_threads(o.threads)
    # Both children import both stacks before the baseline, so imports weigh the same in both.
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import trl  # noqa: F401

    import model_garden.training.run  # noqa: F401
    from model_garden.models import load_model, load_processing
    from model_garden.training.model_setup import use_bf16

    tok = load_processing(o.model)
    model = load_model(o.model)  # float32, as `train` loads a base model on a CPU
    gc.collect()
    load_peak = _peak_rss_mb()
    after_load = _rss_now_mb()
    reset = _reset_peak_rss()
    total = o.warmup + o.steps
    clock = _step_clock(total)
    out = Path(tempfile.mkdtemp(prefix=f"bench-{o.trainer_child}-"))
    try:
        train = _train_ours if o.trainer_child == "model-garden" else _train_trl
        recorder = train(o, model, tok, out, clock)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if len(clock.times) != total or len(recorder.batches) < total:
        raise RuntimeError(f"{o.trainer_child}: {len(clock.times)} steps and {len(recorder.batches)} batches for {total} steps")
    batches, times = recorder.batches[:total], clock.times[o.warmup :]
    timed = batches[o.warmup :]
    tokens = sum(b["tokens"] for b in timed)
    padded = sum(b["padded"] for b in timed)
    result = {
        "trainer": o.trainer_child,
        "tokens_per_s": tokens / sum(times),
        "step_time_median_s": statistics.median(times),
        "step_times_s": times,
        "timed_steps": o.steps,
        "warmup_steps": o.warmup,
        "timed_tokens": tokens,
        "timed_padded_tokens": padded,
        "padding_fraction": 1 - tokens / padded,
        "timed_loss_tokens": sum(b["loss_tokens"] for b in timed),
        "timed_examples": sum(b["examples"] for b in timed),
        "step_tokens": [b["tokens"] for b in batches],
        "step_loss_tokens": [b["loss_tokens"] for b in batches],
        "trainer_tokens_seen": clock.tokens_seen,
        "peak_rss_mb": clock.peak_mb,
        "rss_after_load_mb": after_load,
        "peak_over_load_mb": clock.peak_mb - after_load,
        "load_peak_rss_mb": load_peak,
        "peak_reset": reset,
        "trainable_params": clock.trainable,
        "threads": torch.get_num_threads(),
        "bf16": use_bf16("auto"),
        "gradient_checkpointing": o.gradient_checkpointing,
    }
    print(RESULT_MARK + json.dumps(result), flush=True)


def _child_args(o: argparse.Namespace, which: str) -> list[str]:
    args = [
        "--trainer-child", which, "--model", o.model, "--data", o.data, "--steps", str(o.steps),
        "--warmup", str(o.warmup), "--batch", str(o.batch), "--max-length", str(o.max_length),
        "--threads", str(o.threads), "--lr", repr(o.lr), "--group-by-length", o.group_by_length,
    ]
    return args + ([] if o.gradient_checkpointing else ["--no-gradient-checkpointing"])


def vs_trl(o: argparse.Namespace) -> dict[str, Any]:
    """Train with each trainer in its own child process, one after the other; the report."""
    env = {
        **os.environ, "OMP_NUM_THREADS": str(o.threads), "MKL_NUM_THREADS": str(o.threads),
        "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
    }
    results = {}
    for which in TRAINERS:
        done = subprocess.run([sys.executable, __file__, *_child_args(o, which)], capture_output=True, text=True, env=env)
        lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
        if done.returncode or not lines:
            raise RuntimeError(f"the {which} child failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
        results[which] = json.loads(lines[-1][len(RESULT_MARK) :])
    ours, theirs = results["model-garden"], results["trl"]
    keys = ("tokens_per_s", "step_time_median_s", "peak_rss_mb", "peak_over_load_mb")
    return {
        "setup": {
            "model": o.model, "data": o.data, "steps": o.steps, "warmup": o.warmup, "batch": o.batch,
            "grad_accum": 1, "max_length": o.max_length, "lr": o.lr, "threads": o.threads,
            "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": "q,k,v,o,gate,up,down proj"},
            "optimizer": "adamw_torch, linear decay, no warm-up, max_grad_norm 1.0",
            "gradient_checkpointing": o.gradient_checkpointing,
            "group_by_length": {"model-garden": o.group_by_length in ("each", "both"), "trl": o.group_by_length == "both"},
            "loss": {"model-garden": "--mask-strategy auto (moderate, structural weight 0.1), chunked weighted loss",
                     "trl": "completion_only_loss=True, nll through TRL's fused (chunked) LM head, which on a CPU "
                            "projects every position (prompt and padding too); only on CUDA/XPU with Triton the labelled ones"},
            "order": list(TRAINERS),
        },
        **results,
        "ratio_ours_over_trl": {k: ours[k] / theirs[k] if theirs[k] else None for k in keys},
        "counting": COUNTING,
    }


def options(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked, with the defaults that depend on the mode filled in."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 6; with --vs-trl 20)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--memory-child", choices=("plain", "chunked"))
    side = parser.add_argument_group("--vs-trl: training side by side with TRL's SFTTrainer")
    side.add_argument("--vs-trl", action="store_true", help="train model-garden and TRL side by side; print JSON")
    side.add_argument("--model", default="smollm2-135m", help="alias, .gguf or Hugging Face folder")
    side.add_argument("--data", default=str(EXAMPLE_DATA), help="JSONL of chats or prompt/completion records (e.g. make-data sroie's train.jsonl)")
    side.add_argument("--max-length", type=int, default=2048)
    side.add_argument("--warmup", type=int, default=2, help="optimizer steps trained before the timed ones")
    side.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads of each trainer")
    side.add_argument("--lr", type=float, default=5e-4)
    side.add_argument("--group-by-length", choices=("each", "both", "none"), default="each",
                      help="each: as each trainer defaults (model-garden grouped, TRL random); both: both grouped "
                           "(different orders); none: both random, the same seeded order, so the same batches")
    side.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    side.add_argument("--trainer-child", choices=TRAINERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.vs_trl or args.trainer_child:
        args.steps = 20 if args.steps is None else args.steps
        if args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.threads < 1:
            parser.error("--steps, --batch and --threads must be >= 1, --warmup >= 0")
        args.data = str(Path(args.data).resolve())
    else:
        args.steps = 6 if args.steps is None else args.steps
    return args


def main() -> None:
    args = options()
    if args.memory_child:
        _loss_memory(args.memory_child, args.batch, args.seq)
        return
    if args.trainer_child:
        _trainer_child(args)
        return
    if args.vs_trl:
        print(json.dumps(vs_trl(args), indent=2))
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
