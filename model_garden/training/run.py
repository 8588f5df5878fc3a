"""Run a training job from a ``TrainConfig``: the body of ``model-garden train``.

Output folder layout::

    OUTPUT/config.yaml          resolved configuration
    OUTPUT/mask_stats.json      fraction trained per class, fallbacks, drops
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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from model_garden.training.config import TrainConfig

log = logging.getLogger(__name__)

DEFAULT_LORA_TARGET = r"^(?!.*(?:visual|vision)).*\.(?:q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


@dataclass
class TrainResult:
    """What a run produced."""

    output: Path
    metrics: dict[str, Any]
    interrupted: bool


def _use_bf16(setting: str) -> bool:
    import torch

    if setting != "auto":
        return setting == "true"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    # On CPUs without native bf16 (AVX512-BF16 / AMX), autocast is slower than fp32.
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def build_model(cfg: TrainConfig, vision: bool, model: Any = None, trainable_token_ids: list[int] | None = None) -> Any:
    """Load the base model (unless given) and wrap it in a LoRA adapter unless full fine-tuning.

    ``trainable_token_ids`` (tokens added to the vocabulary, e.g. temporal tokens) get
    trainable embedding rows in the adapter (PEFT trainable tokens; an untied output
    layer gets the same rows), saved with it as full values.
    """
    import torch
    from transformers import set_seed

    from model_garden.models import load_model

    if model is None:
        model = load_model(cfg.base_model, vision=vision, dtype=torch.float32)
    set_seed(cfg.seed)  # the adapter's initial weights depend only on the seed
    if cfg.gradient_checkpointing:
        model.config.use_cache = False
    if cfg.full_finetune:
        return model
    from peft import LoraConfig, get_peft_model

    indices: list[int] | dict[str, list[int]] | None = None
    if trainable_token_ids:
        indices = sorted(set(trainable_token_ids))
        inputs, outputs = model.get_input_embeddings(), model.get_output_embeddings()
        if outputs is not None and outputs.weight is not inputs.weight:
            names = {id(m): n for n, m in model.named_modules()}
            indices = {names[id(inputs)]: indices, names[id(outputs)]: indices}
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target or DEFAULT_LORA_TARGET,
        trainable_token_indices=indices,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    if cfg.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def _check_family(processing: Any, vision: bool, base_model: str) -> None:
    from model_garden.masking import is_processor

    if vision and not is_processor(processing):
        raise ValueError(f"--base-model {base_model} is a text model; use `model-garden train`")
    if not vision and is_processor(processing):
        raise ValueError(f"--base-model {base_model} is a vision-language model; use `model-garden train-vision`")


def masked_train_data(cfg: TrainConfig, processing: Any, train_records: Any = None) -> Any:
    """The training set as ``cfg`` masks it (a ``MaskedDataset``, not yet prescanned)."""
    from model_garden.data.images import ImagePolicy
    from model_garden.data.jsonl import JsonlDataset
    from model_garden.training.data import MaskedDataset

    policy = ImagePolicy(
        base_dir=Path(cfg.dataset).parent if cfg.dataset else Path.cwd(),
        allow_outside_paths=cfg.allow_outside_paths,
        allow_remote=cfg.allow_remote_images,
    )
    if train_records is None:
        train_records = JsonlDataset(cfg.dataset, skip_bad_lines=True)
    schema = None
    if cfg.mask_strategy == "schema-forced":
        from model_garden.data.schema import schema_for

        schema = schema_for(cfg.dataset, None, cfg.schema)
    return MaskedDataset(train_records, processing, cfg.mask_config(), cfg.max_length, policy, schema=schema)


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
) -> TrainResult:
    """Train as configured; see the module docstring for what lands in ``cfg.output``.

    Args:
        cfg: The resolved configuration.
        console: Where progress and tables go (stderr by default).
        callbacks: Extra ``TrainerCallback`` objects.
        model: An already loaded base model to use instead of ``cfg.base_model`` (the
            adapter is still added unless ``cfg.full_finetune``).
        processing: Its tokenizer or processor (required with ``model``).
        train_records: Records to train on instead of ``cfg.dataset`` (a sequence of dicts
            with ``messages``, e.g. ``VideoTemporalSFTDataset``).
        eval_records: Likewise instead of ``cfg.eval_dataset``.
        trainable_token_ids: Added tokens whose embedding rows the adapter trains.
    """
    from transformers import PrinterCallback, TrainingArguments, set_seed
    from transformers.integrations import TensorBoardCallback
    from transformers.trainer_utils import get_last_checkpoint

    from model_garden.data.images import ImagePolicy
    from model_garden.masking import MaskConfig, is_processor
    from model_garden.masking.inspect import render_rich
    from model_garden.models import is_vision_model, load_processing, resolve_model
    from model_garden.training.callbacks import JsonlLog, RichProgress, SaveOnSignal
    from model_garden.training.collate import StructuredOutputDataCollator
    from model_garden.data.jsonl import JsonlDataset
    from model_garden.training.data import MaskedDataset
    from model_garden.training.trainer import SelectiveLossSFTTrainer

    console = console or Console(stderr=True)
    if not cfg.dataset and train_records is None:
        raise ValueError("--dataset is required")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")
    set_seed(cfg.seed)

    if (model is None) != (processing is None):
        raise ValueError("pass both model and processing, or neither")
    if processing is None:
        vision = cfg.vision or is_vision_model(resolve_model(cfg.base_model))
        processing = load_processing(cfg.base_model, vision=vision)
    else:
        vision = is_processor(processing)
    _check_family(processing, cfg.vision, cfg.base_model)
    train_data = masked_train_data(cfg, processing, train_records)
    policy = train_data.policy
    scan = train_data.prescan(skip_bad_lines=cfg.skip_bad_lines)
    if not len(train_data):
        raise ValueError(f"--dataset {cfg.dataset or 'records'}: no usable example")
    stats = {**scan.stats.as_dict(), "skipped": scan.errors, "mask_fingerprint": scan.fingerprint}
    (out / "mask_stats.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
    console.print(scan.stats.table(f"mask statistics · {Path(cfg.dataset or 'records').name} · {cfg.mask_strategy}"))
    console.print(render_rich(processing, train_data[0], prompt_tail=12))
    for warning in scan.stats.warnings():
        console.print(f"[yellow]warning:[/] {warning}")
    if scan.errors:
        console.print(f"[yellow]warning:[/] skipped {len(scan.errors)} unusable line(s); see {out / 'mask_stats.json'}")

    eval_data = None
    if cfg.eval_dataset and eval_records is None:
        eval_records = JsonlDataset(cfg.eval_dataset, skip_bad_lines=True)
    if eval_records is not None:
        # Every strategy is judged on the same tokens: the values (the whole reply when it is not JSON).
        value_mask = MaskConfig(strategy="aggressive", train_on=cfg.train_on)
        eval_base = Path(cfg.eval_dataset).parent if cfg.eval_dataset else policy.base_dir
        eval_policy = ImagePolicy(eval_base, cfg.allow_outside_paths, cfg.allow_remote_images)
        eval_data = MaskedDataset(eval_records, processing, value_mask, cfg.max_length, eval_policy)
        eval_data.prescan(skip_bad_lines=True)

    model = build_model(cfg, vision, model, trainable_token_ids)
    report_to = [] if cfg.report_to in ("none", "tensorboard") else [cfg.report_to]
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        optim=cfg.optim,
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if eval_data is not None else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=_use_bf16(cfg.bf16),
        report_to=report_to,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        ddp_find_unused_parameters=False,
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=cfg.dataloader_workers,
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        use_cpu=not __import__("torch").cuda.is_available(),
    )
    signals = SaveOnSignal()
    extra = [RichProgress(console), JsonlLog(out / "log.jsonl"), signals, *(callbacks or [])]
    if cfg.report_to == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        extra.append(TensorBoardCallback(SummaryWriter(log_dir=str(out / "logs"))))
    trainer = SelectiveLossSFTTrainer(
        model=model,
        args=args,
        train_dataset=train_data,
        eval_dataset=eval_data,
        data_collator=StructuredOutputDataCollator(processing=processing),
        processing_class=processing,
        callbacks=extra,
        structural_keep_prob=cfg.structural_keep_prob,
        structural_schedule=cfg.schedule(),
        loss_chunk_size=cfg.loss_chunk_size,
    )
    trainer.remove_callback(PrinterCallback)  # the progress bar and log.jsonl replace raw dict printing
    resume = None
    if cfg.resume:
        resume = get_last_checkpoint(str(out / "checkpoints")) if cfg.resume == "latest" else cfg.resume
        if resume is None:
            raise FileNotFoundError(f"--resume latest: no checkpoint in {out / 'checkpoints'}")
    start_eval = []
    if eval_data is not None and resume is None:
        # The starting point of the eval curve (train() starts a fresh log history).
        start_eval = [(0, trainer.evaluate()["eval_value_loss"])]
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    elapsed = time.perf_counter() - start
    if signals.received is not None:
        last = get_last_checkpoint(str(out / "checkpoints"))
        console.print(f"[yellow]interrupted:[/] checkpoint saved at {last}; continue with --resume latest")
        return TrainResult(out, {"interrupted_at_step": trainer.state.global_step}, True)

    trainer.save_model(str(out))
    processing.save_pretrained(str(out))
    if cfg.merge and not cfg.full_finetune:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(out / "merged"))
        processing.save_pretrained(str(out / "merged"))
    history = [r for r in trainer.state.log_history]
    metrics = {
        "steps": trainer.state.global_step,
        "train_runtime_s": elapsed,
        "train_loss": result.training_loss,
        "tokens_seen": trainer.state.num_input_tokens_seen,
        "tokens_per_s": trainer.state.num_input_tokens_seen / elapsed if elapsed else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "eval_value_loss": start_eval + [(r["step"], r["eval_value_loss"]) for r in history if "eval_value_loss" in r],
        "loss": [(r["step"], r["loss"]) for r in history if "loss" in r],
        "dropped_in_training": trainer.data_collator.dropped,
        "skipped_lines": len(scan.errors),
        "bf16": args.bf16,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    console.print(f"[green]done:[/] {trainer.state.global_step} steps in {elapsed:.0f} s · saved to {out}")
    return TrainResult(out, metrics, False)
