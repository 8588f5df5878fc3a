"""Run a training job from a ``TrainConfig``: the body of ``model-garden train``.

``train`` = ``setup_processing`` and ``setup_model`` (``model_setup.py``: base model,
dtype, 4-bit, adapter) -> ``setup_data`` (sources, codec, the prescan) ->
``setup_trainer`` -> ``fit`` -> ``save``. Output folder layout::

    OUTPUT/config.yaml          resolved configuration (grouped)
    OUTPUT/mask_stats.json      fraction trained per class, fallbacks, drops, fingerprint
    OUTPUT/adapter_*            LoRA adapter (or full weights with --full-finetune)
    OUTPUT/tokenizer*, chat_template.jinja, (processor files)
    OUTPUT/merged/              base + adapter merged (--merge)
    OUTPUT/metrics.json         final numbers; OUTPUT/log.jsonl every logged step
    OUTPUT/logs/                TensorBoard
    OUTPUT/checkpoints/         resumable checkpoints

Try it: ``model-garden train --dataset model_garden/assets/example.jsonl --max-steps 2``
"""

from __future__ import annotations

import json
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from transformers import EarlyStoppingCallback, PrinterCallback, TrainingArguments, set_seed
from transformers.integrations import TensorBoardCallback

from model_garden.data.sources import open_source
from model_garden.masking.codec import ChatCodec
from model_garden.masking.inspect import render_rich
from model_garden.masking.scan import ScanReport
from model_garden.masking.strategies import MaskConfig
from model_garden.models import public_name, resolve_model
from model_garden.training.callbacks import JsonlLog, RichProgress, SaveOnSignal, TrainClock
from model_garden.training.checkpoints import incomplete_reason, latest_complete_checkpoint
from model_garden.training.collate import StructuredOutputDataCollator
from model_garden.options import ConfigError
from model_garden.training.config import TrainConfig
from model_garden.training import model_card, run_folder
from model_garden.training.data import MaskedDataset
from model_garden.training.model_setup import setup_model, setup_processing, use_bf16
from model_garden.training.trainer import SelectiveLossSFTTrainer

log = logging.getLogger(__name__)

# Decoded metrics as the trainer logs them (eval_<name>); only a decoded evaluation has them.
DECODED_KEYS = ("json_valid", "field_accuracy", "field_accuracy_filled", "schema_valid")
DECODED_ONLY = ("field_accuracy", "field_accuracy_filled", "json_valid")


@dataclass
class TrainResult:
    """What a run produced."""

    output: Path
    metrics: dict[str, Any]
    interrupted: bool


@dataclass
class TrainData:
    """The prepared data of a run."""

    codec: ChatCodec
    train: MaskedDataset
    eval: MaskedDataset | None
    scan: ScanReport
    eval_scan: ScanReport | None = None


def _source(cfg: TrainConfig, spec: str, split: str) -> Any:
    d = cfg.data
    return open_source(spec, format=d.data_format, name=d.data_name, split=split, skip_bad_lines=True)


def masked_train_data(cfg: TrainConfig, processing: Any, train_source: Any = None) -> MaskedDataset:
    """The training set as ``cfg`` masks it (not yet prescanned)."""
    d = cfg.data
    if train_source is None:
        if not d.dataset:
            raise ValueError("--dataset is required")
        train_source = _source(cfg, d.dataset, d.data_split)
    data_root = d.dataset if d.dataset else getattr(train_source, "base_dir", None)
    codec = ChatCodec.for_data(
        processing, data_root, allow_remote_images=d.allow_remote_images, allow_outside_paths=d.allow_outside_paths, schema_file=cfg.mask.schema
    )
    return MaskedDataset(train_source, codec, cfg.mask_config(), d.max_length, num_proc=d.num_proc, scan_cache=d.scan_cache)


def setup_data(cfg: TrainConfig, processing: Any, train_source: Any = None, eval_source: Any = None) -> TrainData:
    """Open the sources, build the codec and scan the training set (bad records refused
    unless ``--skip-bad-lines``; an empty training or eval set is an error)."""
    d = cfg.data
    train_data = masked_train_data(cfg, processing, train_source)
    codec, train_source = train_data.codec, train_data.source
    scan = train_data.prescan(skip_bad_lines=d.skip_bad_lines)
    if not len(train_data):
        raise ValueError(f"--dataset {d.dataset or train_source.name}: no usable example")
    eval_data = None
    if eval_source is None and d.eval_dataset:
        eval_source = _source(cfg, d.eval_dataset, d.eval_split)
    if eval_source is not None:
        eval_root = d.eval_dataset or getattr(eval_source, "base_dir", None)
        eval_codec = ChatCodec.for_data(processing, eval_root, allow_remote_images=d.allow_remote_images, allow_outside_paths=d.allow_outside_paths)
        # Every strategy is judged on the same tokens: the values (the whole reply when it is not JSON).
        value_mask = MaskConfig(strategy="aggressive", train_on=cfg.mask.train_on)
        eval_data = MaskedDataset(eval_source, eval_codec, value_mask, d.max_length, num_proc=d.num_proc, scan_cache=d.scan_cache)
        eval_scan = eval_data.prescan(skip_bad_lines=True)
        if not len(eval_data):
            raise ValueError(f"--eval-dataset {d.eval_dataset or eval_source.name}: no usable example")
        return TrainData(codec, train_data, eval_data, scan, eval_scan)
    return TrainData(codec, train_data, None, scan)


def training_arguments(cfg: TrainConfig, out: Path, evaluate: bool) -> TrainingArguments:
    """transformers' arguments for this configuration."""
    o, r = cfg.optim, cfg.run
    best = r.metric_for_best if evaluate else None
    checkpointing = cfg.model.gradient_checkpointing
    return TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=o.batch_size,
        per_device_eval_batch_size=o.batch_size,
        gradient_accumulation_steps=o.grad_accum,
        learning_rate=o.lr,
        num_train_epochs=o.epochs,
        max_steps=o.max_steps,
        lr_scheduler_type=o.lr_scheduler,
        # transformers 5 reads a warmup_steps below 1 as a fraction of the steps.
        warmup_steps=o.warmup_ratio,
        weight_decay=o.weight_decay,
        optim=o.optim,
        max_grad_norm=o.max_grad_norm,
        logging_steps=r.logging_steps,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=r.eval_steps,
        save_strategy="steps",
        save_steps=r.save_steps,
        save_total_limit=r.save_total_limit,
        metric_for_best_model=f"eval_{best}" if best else None,
        greater_is_better=best != "value_loss" if best else None,
        load_best_model_at_end=best is not None,
        seed=o.seed,
        data_seed=o.seed,
        bf16=use_bf16(cfg.model.bf16),
        report_to=[] if r.report_to in ("none", "tensorboard") else [r.report_to],
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if o.group_by_length else "random",
        ddp_find_unused_parameters=False,
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=cfg.data.dataloader_workers,
        activation_checkpointing=checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        use_cpu=not torch.cuda.is_available(),
        # A resumed run continues early stopping's patience count and the training clock
        # where the checkpoint left them, as an uninterrupted run would.
        restore_callback_states_from_checkpoint=True,
    )


def setup_trainer(
    cfg: TrainConfig, model: Any, data: TrainData, out: Path, console: Console, callbacks: list | None, decoded_eval: Any = None
) -> tuple[SelectiveLossSFTTrainer, SaveOnSignal]:
    """The trainer with its callbacks (progress, JSONL log, TensorBoard, save on signal,
    early stopping) and its decoded evaluation, if any."""
    args = training_arguments(cfg, out, data.eval is not None)
    if cfg.run.metric_for_best in DECODED_ONLY and decoded_eval is None:
        raise ConfigError(f"--metric-for-best {cfg.run.metric_for_best} needs decoded evaluation: --eval-dataset and --eval-generate > 0")
    signals = SaveOnSignal()
    extra = [RichProgress(console), JsonlLog(out / "log.jsonl"), signals, TrainClock(), *(callbacks or [])]
    if cfg.run.early_stopping_patience and data.eval is not None:
        extra.append(EarlyStoppingCallback(early_stopping_patience=cfg.run.early_stopping_patience))
    if cfg.run.report_to == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter  # tensorboard is imported only when used: it is slow to import

        extra.append(TensorBoardCallback(SummaryWriter(log_dir=str(out / "logs"))))
    trainer = SelectiveLossSFTTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=StructuredOutputDataCollator(processing=data.codec.processing),
        processing_class=data.codec.processing,
        callbacks=extra,
        structural_keep_prob=cfg.mask.structural_keep_prob,
        structural_schedule=cfg.mask.schedule(),
        loss_chunk_size=cfg.optim.loss_chunk_size,
        decoded_eval=decoded_eval,
    )
    trainer.remove_callback(PrinterCallback)  # the progress bar and log.jsonl replace raw dict printing
    return trainer, signals


def resume_point(cfg: TrainConfig, out: Path, console: Console) -> str | None:
    """The checkpoint ``--resume`` names (``latest``: the newest complete one; incomplete
    ones left by a crash are named and skipped), or None."""
    if not cfg.run.resume:
        return None
    if cfg.run.resume != "latest":
        reason = incomplete_reason(Path(cfg.run.resume))
        if reason is not None:
            raise FileNotFoundError(f"--resume {cfg.run.resume}: not a complete checkpoint ({reason}); --resume latest takes the newest complete one")
        return cfg.run.resume
    found, skipped = latest_complete_checkpoint(out / "checkpoints")
    for folder in skipped:
        console.print(f"[yellow]warning:[/] --resume latest skipped an incomplete checkpoint: {folder}")
    if found is None:
        raise FileNotFoundError(f"--resume latest: no complete checkpoint in {out / 'checkpoints'}")
    return str(found)


def _logged_start_eval(log: Path) -> dict[str, float]:
    """The step-0 evaluation a resumed run made before its first step, from its log."""
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step") == 0 and "eval_value_loss" in record:
                return record
    return {}


def fit(trainer: SelectiveLossSFTTrainer, resume: str | None, log: Path) -> tuple[Any, dict[str, float], float]:
    """Train; returns transformers' result, the evaluation at step 0 (empty without an
    eval set; when resuming, the one in ``log``) and the seconds spent training, over
    every sitting of the run."""
    start_eval = {}
    if trainer.eval_dataset is not None:
        # The starting point of the eval curves: train() starts a fresh log history, and a
        # checkpoint's history does not hold it.
        start_eval = trainer.evaluate() if resume is None else _logged_start_eval(log)
    result = trainer.train(resume_from_checkpoint=resume)
    # Resuming replaces the clock with the checkpoint's, so look it up after training.
    clock = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, TrainClock))
    return result, start_eval, clock.total()


def save(cfg: TrainConfig, trainer: SelectiveLossSFTTrainer, processing: Any, out: Path) -> None:
    """The adapter (or full weights), the tokenizer or processor, and ``--merge``'s copy.

    The adapter names its base model by the name the user gave (for the embedded alias,
    the public hub id), so the folder loads on other machines; the local path is kept in
    ``metrics.json``."""
    trainer.save_model(str(out))
    processing.save_pretrained(str(out))
    adapter_config = out / "adapter_config.json"
    if adapter_config.is_file():
        config = json.loads(adapter_config.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = public_name(cfg.model.base_model)
        adapter_config.write_text(json.dumps(config, indent=2), encoding="utf-8")
    if cfg.run.merge and not cfg.model.full_finetune:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(out / "merged"))
        processing.save_pretrained(str(out / "merged"))


def _start(cfg: TrainConfig, data: TrainData, processing: Any, out: Path, console: Console) -> None:
    """Write the run's configuration and mask statistics and show them."""
    cfg.save(out / "config.yaml")
    scan = data.scan
    stats = {**scan.stats.as_dict(), "skipped": scan.messages, "mask_fingerprint": scan.fingerprint}
    (out / "mask_stats.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
    name = Path(cfg.data.dataset).name if cfg.data.dataset else data.train.source.name
    console.print(scan.stats.table(f"mask statistics · {name} · {cfg.mask.describe()}"))
    console.print(render_rich(processing, data.train[0], prompt_tail=12, marks=console.color_system is None))
    for warning in scan.stats.warnings():
        console.print(f"[yellow]warning:[/] {warning}")
    for report in (scan, data.eval_scan):
        if report is not None and report.from_cache:
            console.print(escape(report.from_cache), soft_wrap=True)
    if scan.errors:
        console.print(f"[yellow]warning:[/] skipped {len(scan.errors)} unusable record(s); see {out / 'mask_stats.json'}")


def train(
    cfg: TrainConfig,
    *,
    console: Console | None = None,
    callbacks: list | None = None,
    model: Any = None,
    processing: Any = None,
    train_records: Any = None,
    eval_records: Any = None,
    trainable_token_ids: list[int] | None = None,
    on_start: Callable[[Path], None] | None = None,
    decoded_eval_factory: Callable[..., Any] | None = None,
) -> TrainResult:
    """Train as configured; see the module docstring for what lands in ``cfg.run.output``.

    Args:
        cfg: The resolved configuration.
        console: Where progress and tables go (stderr by default).
        callbacks: Extra ``TrainerCallback`` objects.
        model: An already loaded base model to use instead of ``--base-model`` (the
            adapter is still added unless ``--full-finetune``).
        processing: Its tokenizer or processor (required with ``model``).
        train_records: A ``SampleSource`` to train on instead of ``--dataset`` (e.g. a
            ``VideoTemporalSFTDataset``).
        eval_records: Likewise instead of ``--eval-dataset``.
        trainable_token_ids: Added tokens whose embedding rows the adapter trains.
        on_start: Called with the output folder once it is this run's (to save more files).
        decoded_eval_factory: Builds the decoded evaluation of ``--eval-generate``
            (``model_garden.evaluation.decoded.decoded_eval_factory``; the CLI and
            ``compare`` pass it: this layer cannot import evaluation).
    """
    console = console or Console(stderr=True)
    if (model is None) != (processing is None):
        raise ValueError("pass both model and processing, or neither")
    set_seed(cfg.optim.seed)
    loads_base = model is None
    processing, vision = setup_processing(cfg, processing)
    data = setup_data(cfg, processing, train_records, eval_records)
    out = Path(cfg.run.output)
    created, lock, cfg = run_folder.claim(cfg)
    with lock:  # held until the run ends, however it ends
        try:  # until training starts, a failure leaves nothing behind
            if cfg.run.resume:
                for change in run_folder.check_resume(cfg, out, data.train.fingerprint):
                    console.print(f"[yellow]resuming with a change:[/] {change}")
            resume = resume_point(cfg, out, console)
            model = setup_model(cfg, vision, model, trainable_token_ids)
            decoded_eval = None
            if decoded_eval_factory is not None and data.eval is not None:
                budget = int(data.eval_scan.longest_reply * 1.25) + 16
                decoded_eval = decoded_eval_factory(cfg, data.eval.codec, data.eval.source, budget)
            trainer, signals = setup_trainer(cfg, model, data, out, console, callbacks, decoded_eval)
            _start(cfg, data, processing, out, console)
            if on_start is not None:
                on_start(out)
        except BaseException:
            run_folder.release(out, created)
            raise
        result, start_eval, elapsed = fit(trainer, resume, out / "log.jsonl")
        if signals.received is not None:
            last, _ = latest_complete_checkpoint(out / "checkpoints")
            console.print(f"[yellow]interrupted:[/] checkpoint saved at {last}; continue with --resume latest")
            return TrainResult(out, {"interrupted_at_step": trainer.state.global_step, "signal": signals.received}, True)
        save(cfg, trainer, processing, out)
        scan = data.scan
        history = trainer.state.log_history
        evals = ([{**start_eval, "step": 0}] if start_eval else []) + [r for r in history if "eval_value_loss" in r]
        metrics = {
            "steps": trainer.state.global_step,
            "train_runtime_s": elapsed,
            "train_loss": result.training_loss,
            "tokens_seen": trainer.state.num_input_tokens_seen,
            "tokens_per_s": trainer.state.num_input_tokens_seen / elapsed if elapsed else None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "eval_value_loss": [(r["step"], r["eval_value_loss"]) for r in evals if "eval_value_loss" in r],
            "decoded_eval": [(r["step"], {k[5:]: v for k, v in r.items() if k[5:] in DECODED_KEYS}) for r in evals if "eval_field_accuracy" in r],
            "best_checkpoint": trainer.state.best_model_checkpoint,
            "loss": [(r["step"], r["loss"]) for r in history if "loss" in r],
            "dropped_in_training": trainer.data_collator.dropped,
            "skipped_lines": len(scan.errors),
            "bf16": trainer.args.bf16,
            "base_model": cfg.model.base_model,
            "base_model_path": str(Path(resolve_model(cfg.model.base_model)).resolve()) if loads_base else None,
            "longest_reply_tokens": scan.longest_reply,
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        model_card.write(cfg, out, model_card.load_stats(out), metrics)
        if cfg.run.push_to_hub:
            console.print(f"pushed to the Hub: {model_card.push(out, cfg.run.push_to_hub)}")
        console.print(f"[green]done:[/] {trainer.state.global_step} steps in {elapsed:.0f} s · saved to {out}")
        return TrainResult(out, metrics, False)
