"""The training configuration: one typed dataclass, loadable from YAML, overridable by
flags, validated with messages that name the flag, and saved with every run.

Precedence: dataclass defaults < ``--config FILE.yaml`` < command-line flags.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from model_garden.masking import MaskConfig

_SCHEDULE_RE = re.compile(r"^linear:(?P<start>[0-9.]+)->(?P<end>[0-9.]+)$")


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class TrainConfig:
    """Options of ``model-garden train`` / ``train-vision`` (flag = field name with dashes)."""

    base_model: str = _opt("smollm2-135m", "Alias (smollm2-135m), .gguf file, HF directory or hub id")
    dataset: str | None = _opt(None, "Training JSONL (OpenAI chat format)")
    eval_dataset: str | None = _opt(None, "Evaluation JSONL; its value-token loss is logged")
    output: str = _opt("outputs/run", "Output folder (adapter, config, logs, checkpoints)")
    vision: bool = _opt(False, "Train a vision-language model (set by train-vision)")
    # what carries loss
    mask_strategy: str = _opt("none", "none | conservative | moderate | aggressive | custom | schema-forced")
    use_selective_loss: bool = _opt(False, "The notes' switch: conservative masking, or custom with --semantic-patterns")
    semantic_patterns: list[str] = field(
        default_factory=list, metadata={"help": "Regexes whose capture groups are trained (custom strategy)"}
    )
    structural_weight: float = _opt(0.0, "Weight of masked structural tokens (0 = masked)")
    structural_weight_schedule: str | None = _opt(None, "e.g. linear:1.0->0.0 (format first, then values)")
    structural_keep_prob: float = _opt(0.0, "Probability a masked structural token is kept in the loss, per batch")
    train_on: str = _opt("all_assistant", "all_assistant | last_assistant")
    schema: str | None = _opt(None, "Reply JSON Schema for schema-forced (default: schema.json beside the data, or the prompt's)")
    # optimisation
    epochs: float = _opt(1.0, "Passes over the training data")
    max_steps: int = _opt(-1, "Stop after this many optimizer steps (overrides --epochs)")
    batch_size: int = _opt(4, "Examples per micro-batch")
    grad_accum: int = _opt(1, "Micro-batches per optimizer step")
    lr: float = _opt(2e-4, "Peak learning rate")
    lr_scheduler: str = _opt("linear", "transformers scheduler name (linear, cosine, constant, ...)")
    warmup_ratio: float = _opt(0.0, "Fraction of steps spent warming up")
    weight_decay: float = _opt(0.0, "AdamW weight decay")
    optim: str = _opt("adamw_torch", "transformers optimizer name (adamw_torch, sgd, adafactor, ...)")
    max_grad_norm: float = _opt(1.0, "Clip gradients to this norm (0 = no clipping)")
    max_length: int | None = _opt(2048, "Truncate examples to this many tokens")
    group_by_length: bool = _opt(False, "Batch examples of similar length together (less padding)")
    seed: int = _opt(0, "Seed of initial adapter weights, data order and mask draws")
    # model
    full_finetune: bool = _opt(False, "Train all weights instead of a LoRA adapter")
    lora_r: int = _opt(16, "LoRA rank")
    lora_alpha: int = _opt(32, "LoRA alpha")
    lora_dropout: float = _opt(0.0, "LoRA dropout")
    lora_target: str | None = _opt(None, "Regex of module names to adapt (default: the language model's linear layers)")
    gradient_checkpointing: bool = _opt(
        True, "Recompute activations in backward to save memory (on by default, as in TRL; see docs/benchmarks.md)"
    )
    bf16: str = _opt("auto", "auto | true | false: bf16 autocast (auto: when the CPU/GPU supports it)")
    loss_chunk_size: int = _opt(512, "Rows projected to the vocabulary at a time in the loss")
    # bookkeeping
    logging_steps: int = _opt(5, "Log every N steps")
    eval_steps: int = _opt(50, "Evaluate every N steps (with --eval-dataset)")
    save_steps: int = _opt(100, "Checkpoint every N steps")
    save_total_limit: int = _opt(2, "Keep at most this many checkpoints")
    resume: str | None = _opt(None, "Resume: 'latest' or a checkpoint folder")
    report_to: str = _opt("tensorboard", "tensorboard | wandb | none | ... (transformers integrations)")
    merge: bool = _opt(False, "Also save the adapter merged into the base model (output/merged)")
    skip_bad_lines: bool = _opt(False, "Train on the good lines of a dataset with errors (they are logged)")
    allow_remote_images: bool = _opt(False, "Fetch http(s) images")
    allow_outside_paths: bool = _opt(False, "Allow image paths outside the dataset folder")
    dataloader_workers: int = _opt(0, "DataLoader worker processes")

    def __post_init__(self) -> None:
        self.semantic_patterns = list(self.semantic_patterns or [])
        if self.use_selective_loss and self.mask_strategy == "none":
            # The notes' switch: patterns select values; without them start conservative.
            self.mask_strategy = "custom" if self.semantic_patterns else "conservative"
        checks = [
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.grad_accum >= 1, "--grad-accum must be >= 1"),
            (self.lr > 0, "--lr must be > 0"),
            (self.epochs > 0 or self.max_steps > 0, "--epochs must be > 0 (or give --max-steps)"),
            (self.max_length is None or self.max_length >= 16, "--max-length must be >= 16"),
            (0.0 <= self.structural_keep_prob <= 1.0, "--structural-keep-prob must be in [0, 1]"),
            (self.lora_r >= 1, "--lora-r must be >= 1"),
            (self.bf16 in ("auto", "true", "false"), "--bf16 must be auto, true or false"),
            (self.loss_chunk_size >= 1, "--loss-chunk-size must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.structural_weight_schedule and not _SCHEDULE_RE.match(self.structural_weight_schedule):
            raise ValueError(f"--structural-weight-schedule must look like linear:1.0->0.0; got {self.structural_weight_schedule!r}")
        self.mask_config()  # validates the masking options

    def mask_config(self) -> MaskConfig:
        """The masking policy of the training data."""
        return MaskConfig(
            strategy=self.mask_strategy,
            semantic_patterns=tuple(self.semantic_patterns),
            structural_weight=0.0 if self.structural_weight_schedule else self.structural_weight,
            train_on=self.train_on,
        )

    def schedule(self) -> tuple[float, float] | None:
        """``(start, end)`` of the structural-weight schedule, if any."""
        m = _SCHEDULE_RE.match(self.structural_weight_schedule or "")
        return (float(m["start"]), float(m["end"])) if m else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        """Write the resolved configuration as YAML."""
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")


def field_help() -> dict[str, str]:
    """Help text of every option, for the CLI."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(TrainConfig)}


def read_config_file(path: str | Path | None, owners: dict[str, type]) -> dict[str, dict[str, Any]]:
    """The options of a YAML config file, sorted by the dataclass that owns each.

    Args:
        path: The ``--config`` file; None gives empty mappings.
        owners: Name -> dataclass whose fields it may set (first owner wins a shared name).

    Raises:
        ValueError: naming the file and the unknown key.
    """
    values: dict[str, dict[str, Any]] = {owner: {} for owner in owners}
    if not path:
        return values
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"--config {path}: expected a mapping of option: value")
    field_owner: dict[str, str] = {}
    for owner, cls in reversed(owners.items()):
        field_owner |= {f.name: owner for f in dataclasses.fields(cls)}
    for key, value in loaded.items():
        name = str(key).replace("-", "_")
        if name not in field_owner:
            raise ValueError(f"--config {path}: unknown option {key!r}")
        values[field_owner[name]][name] = value
    return values


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults, then the YAML file, then the flags that were given (not None).

    Raises:
        ValueError: naming the file and the unknown key, or the flag with a bad value.
    """
    values = read_config_file(path, {"train": TrainConfig})["train"]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)
