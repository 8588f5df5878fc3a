"""The training configuration: typed option groups, loadable from YAML, overridable by
flags, validated with messages that name the flag, and saved with every run.

``TrainConfig`` holds one group per concern (model, LoRA, data, mask, optimisation, run).
Every field is a flag of ``model-garden train`` (``--max-steps``) and a key of the
``--config`` YAML file, flat (``max_steps: 100``) or grouped (``optim: {max_steps: 100}``).
Precedence: defaults < ``--config FILE.yaml`` < command-line flags.

    cfg = TrainConfig.from_options(dataset="train.jsonl", mask_strategy="moderate", max_steps=50)
    cfg.optim.max_steps, cfg.mask.mask_strategy       # 50, "moderate"

Try it: ``python -m model_garden.training.config`` lists every option by group.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from model_garden.masking.strategies import STRATEGIES, MaskConfig, selective_strategy
from model_garden.options import ConfigError, build, field_docs, flag, read_yaml
from model_garden.training.foreign import Translation, translate

_SCHEDULE_RE = re.compile(r"^linear:(?P<start>[0-9.]+)->(?P<end>[0-9.]+)$")
DTYPES = ("auto", "bfloat16", "float16", "float32")
# Options that change nothing already trained: a resumed run may differ in these when
# --allow-changes names them (training/run_folder.py).
BEST_METRICS = ("field_accuracy", "field_accuracy_filled", "json_valid", "value_loss")
# --mask-strategy auto: the default recipe, chosen by the rule of docs/selective-loss.md
# from the SROIE and forms studies (docs/results/).
AUTO_STRATEGY, AUTO_WEIGHT = "moderate", 0.1
SAFE_TO_CHANGE = ("max_steps", "epochs", "save_steps", "save_total_limit", "eval_steps", "eval_generate", "eval_grounded", "merge", "skip_bad_lines")


def _require(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


@dataclass
class ModelOptions:
    """The model to fine-tune.

    Attributes:
        base_model: Alias (smollm2-135m), .gguf file, Hugging Face folder or hub id.
        vision: Train a vision-language model (set by train-vision).
        full_finetune: Train all weights instead of a LoRA adapter.
        dtype: auto | bfloat16 | float16 | float32: weights of the base model (auto: the checkpoint's own on a GPU, float32 on a CPU, where bf16 autocast does the speed).
        load_in_4bit: QLoRA: load the frozen base in 4-bit NF4 (bitsandbytes; a CUDA GPU only).
        bf16: auto | true | false: bf16 autocast (auto: when the CPU or GPU supports it).
        gradient_checkpointing: Recompute activations in backward to save memory (on by default, as in TRL; see docs/benchmarks.md).
        chat_template: Render chats with this template instead of the model's: a Jinja file, or a name (chatml: ChatML with tools; or any template TRL ships, e.g. qwen2_5, llama3). Saved with the run, so predict and export use it.
    """

    base_model: str = "smollm2-135m"
    vision: bool = False
    full_finetune: bool = False
    dtype: str = "auto"
    load_in_4bit: bool = False
    bf16: str = "auto"
    gradient_checkpointing: bool = True
    chat_template: str | None = None

    def __post_init__(self) -> None:
        _require([
            (self.dtype in DTYPES, f"--dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}"),
            (self.bf16 in ("auto", "true", "false"), f"--bf16 must be auto, true or false; got {self.bf16!r}"),
        ])


@dataclass
class LoraOptions:
    """The LoRA adapter (unless --full-finetune).

    Attributes:
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha.
        lora_dropout: LoRA dropout.
        lora_target: Regex of module names to adapt (default: the language model's linear layers).
    """

    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target: str | None = None

    def __post_init__(self) -> None:
        _require([(self.lora_r >= 1, "--lora-r must be >= 1"), (0.0 <= self.lora_dropout < 1.0, "--lora-dropout must be in [0, 1)")])


@dataclass
class DataOptions:
    """Where the examples come from and how they are read.

    Attributes:
        dataset: Training data: a JSONL file, a parquet/arrow/json file or folder, a save_to_disk folder, or a hub id (OpenAI messages, TRL prompt/completion or ShareGPT records).
        eval_dataset: Evaluation data (same kinds); its value-token loss is logged.
        data_format: auto | jsonl | parquet | arrow | json | disk | hub (auto: from the path).
        data_name: Configuration name of a hub dataset.
        data_split: Split of a hub dataset or a saved DatasetDict.
        eval_split: Split of --eval-dataset when it is a hub dataset or a saved DatasetDict.
        max_length: Truncate examples to this many tokens.
        skip_bad_lines: Train on the good records of a dataset with errors (the others are listed).
        allow_remote_images: Fetch http(s) images.
        allow_outside_paths: Allow image paths outside the dataset folder.
        dataloader_workers: DataLoader worker processes.
        num_proc: Processes that build and check every example before training or validation; they join a scan still running after 3 s (default: the cores other processes leave free; 1: this process only).
        scan_cache: Keep the scan's result on disk and reuse it while the data file, tokenizer, chat template and mask settings are unchanged (--no-scan-cache: scan again; see docs/reliability.md).
    """

    dataset: str | None = None
    eval_dataset: str | None = None
    data_format: str = "auto"
    data_name: str | None = None
    data_split: str = "train"
    eval_split: str = "test"
    max_length: int | None = 2048
    skip_bad_lines: bool = False
    allow_remote_images: bool = False
    allow_outside_paths: bool = False
    dataloader_workers: int = 0
    num_proc: int | None = None
    scan_cache: bool = True

    def __post_init__(self) -> None:
        _require([
            (self.max_length is None or self.max_length >= 16, "--max-length must be >= 16"),
            (self.dataloader_workers >= 0, "--dataloader-workers must be >= 0"),
            (self.num_proc is None or self.num_proc >= 1, "--num-proc must be >= 1"),
        ])


@dataclass
class MaskOptions:
    """What carries loss.

    Attributes:
        mask_strategy: auto | none | conservative | moderate | aggressive | custom | schema-forced (auto: the default recipe of docs/selective-loss.md, moderate with structural weight 0.1, on every JSON reply; a reply without JSON is trained whole).
        use_selective_loss: The notes' switch: conservative masking, or custom with --semantic-patterns.
        semantic_patterns: Regexes whose capture groups are trained (custom strategy).
        structural_weight: Weight of masked structural tokens (0 = masked).
        structural_weight_schedule: e.g. linear:1.0->0.0 (format first, then values).
        structural_keep_prob: Probability a masked structural token is kept in the loss, per batch.
        train_on: all_assistant | last_assistant.
        schema: Reply JSON Schema for schema-forced (default: schema.json beside the data, or the prompt's).
    """

    mask_strategy: str = "auto"
    use_selective_loss: bool = False
    semantic_patterns: list[str] = field(default_factory=list)
    structural_weight: float = 0.0
    structural_weight_schedule: str | None = None
    structural_keep_prob: float = 0.0
    train_on: str = "all_assistant"
    schema: str | None = None

    def __post_init__(self) -> None:
        self.semantic_patterns = list(self.semantic_patterns or [])
        if self.use_selective_loss and self.mask_strategy in ("auto", "none"):
            self.mask_strategy = selective_strategy(True, self.semantic_patterns)
        _require([
            (self.mask_strategy in ("auto", *STRATEGIES), f"--mask-strategy must be one of auto, {', '.join(STRATEGIES)}; got {self.mask_strategy!r}"),
            (0.0 <= self.structural_keep_prob <= 1.0, "--structural-keep-prob must be in [0, 1]"),
        ])
        if self.structural_weight_schedule and not _SCHEDULE_RE.match(self.structural_weight_schedule):
            raise ConfigError(f"--structural-weight-schedule must look like linear:1.0->0.0; got {self.structural_weight_schedule!r}")
        # Each of these acts on masked structural tokens, and auto masks none (it weights them).
        structural = {
            "--structural-weight-schedule": self.structural_weight_schedule,
            "--structural-weight": self.structural_weight,
            "--structural-keep-prob": self.structural_keep_prob,
        }
        given = next((name for name, value in structural.items() if value), None)
        if self.mask_strategy == "auto" and given:
            raise ConfigError(
                f"{given} needs a named --mask-strategy: auto is {AUTO_STRATEGY} at structural weight {AUTO_WEIGHT} "
                f"(e.g. --mask-strategy {AUTO_STRATEGY} {given} ...)"
            )
        self.mask_config()  # validates the masking options

    def mask_config(self) -> MaskConfig:
        """The masking policy of the training data."""
        auto = self.mask_strategy == "auto"
        return MaskConfig(
            strategy=AUTO_STRATEGY if auto else self.mask_strategy,
            semantic_patterns=tuple(self.semantic_patterns),
            structural_weight=AUTO_WEIGHT if auto else 0.0 if self.structural_weight_schedule else self.structural_weight,
            train_on=self.train_on,
            require_json=not auto,
        )

    def describe(self) -> str:
        """The strategy in words, for titles and model cards."""
        return self.mask_strategy + self.details()

    def details(self) -> str:
        """What ``describe`` adds to the strategy's name: its weight or schedule, or what auto is."""
        if self.mask_strategy == "auto":
            return f" ({AUTO_STRATEGY}, structural weight {AUTO_WEIGHT}; replies without JSON trained whole)"
        if self.structural_weight_schedule:
            return f", structural weight schedule {self.structural_weight_schedule}"
        return f", structural weight {self.structural_weight}" if self.structural_weight else ""

    def schedule(self) -> tuple[float, float] | None:
        """``(start, end)`` of the structural-weight schedule, if any."""
        m = _SCHEDULE_RE.match(self.structural_weight_schedule or "")
        return (float(m["start"]), float(m["end"])) if m else None


@dataclass
class OptimOptions:
    """Optimisation.

    Attributes:
        epochs: Passes over the training data.
        max_steps: Stop after this many optimizer steps (overrides --epochs).
        batch_size: Examples per micro-batch.
        grad_accum: Micro-batches per optimizer step.
        lr: Peak learning rate (5e-4: the setting of the SROIE study, LoRA r=16; docs/selective-loss.md).
        lr_scheduler: transformers scheduler name (linear, cosine, constant, ...).
        warmup_ratio: Fraction of steps spent warming up.
        weight_decay: AdamW weight decay.
        optim: transformers optimizer name (adamw_torch, sgd, adafactor, ...).
        max_grad_norm: Clip gradients to this norm (0 = no clipping).
        group_by_length: Batch examples of similar length together (on SROIE at batch 4: 0.9% padding instead of 16.5%); it changes only the order of batches (--no-group-by-length: random batches).
        seed: Seed of initial adapter weights, data order and mask draws.
        loss_chunk_size: Rows projected to the vocabulary at a time in the loss.
    """

    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 5e-4
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    optim: str = "adamw_torch"
    max_grad_norm: float = 1.0
    group_by_length: bool = True
    seed: int = 0
    loss_chunk_size: int = 512

    def __post_init__(self) -> None:
        _require([
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.grad_accum >= 1, "--grad-accum must be >= 1"),
            (self.lr > 0, "--lr must be > 0"),
            (self.epochs > 0 or self.max_steps > 0, "--epochs must be > 0 (or give --max-steps)"),
            (0.0 <= self.warmup_ratio < 1.0, "--warmup-ratio must be in [0, 1)"),
            (self.loss_chunk_size >= 1, "--loss-chunk-size must be >= 1"),
        ])


@dataclass
class RunOptions:
    """Output, logging, evaluation and checkpoints.

    Attributes:
        output: Output folder (adapter, config, logs, checkpoints).
        logging_steps: Log every N steps.
        eval_steps: Evaluate every N steps (with --eval-dataset).
        eval_generate: At each evaluation, also decode the first N eval records under their schema and log JSON validity and field accuracy (0: loss only).
        eval_grounded: Decode them grounded, as predict --grounded: every string value a span of the record's source text (its 'source' field, else its user turns).
        metric_for_best: Keep the checkpoint best at this: field_accuracy | field_accuracy_filled | json_valid | value_loss (loaded at the end; --save-steps must be a multiple of --eval-steps).
        early_stopping_patience: Stop after this many evaluations without improving --metric-for-best.
        save_steps: Checkpoint every N steps.
        save_total_limit: Keep at most this many checkpoints.
        resume: Resume: 'latest', a checkpoint folder, or 'auto' (latest if the run has a complete checkpoint, else start it: what a requeued scheduler job needs); the options and data must match the run's.
        overwrite: Replace the run already in --output (otherwise a non-empty --output is refused).
        allow_changes: Options a resumed run may change, comma-separated (max_steps, epochs, save_steps, save_total_limit, eval_steps, merge, skip_bad_lines).
        report_to: tensorboard | wandb | none | ... (transformers integrations).
        merge: Also save the adapter merged into the base model (output/merged).
        push_to_hub: Hub repository id (user/name) to upload the finished run to (needs a network and a token).
    """

    output: str = "outputs/run"
    logging_steps: int = 5
    eval_steps: int = 50
    eval_generate: int = 32
    eval_grounded: bool = False
    metric_for_best: str | None = None
    early_stopping_patience: int | None = None
    save_steps: int = 100
    save_total_limit: int = 2
    resume: str | None = None
    overwrite: bool = False
    allow_changes: list[str] = field(default_factory=list)
    report_to: str = "tensorboard"
    merge: bool = False
    push_to_hub: str | None = None

    def __post_init__(self) -> None:
        _require([
            (self.logging_steps >= 1, "--logging-steps must be >= 1"),
            (self.eval_steps >= 1, "--eval-steps must be >= 1"),
            (self.save_steps >= 1, "--save-steps must be >= 1"),
            (self.save_total_limit >= 1, "--save-total-limit must be >= 1"),
            (not (self.resume and self.overwrite), "--resume and --overwrite contradict each other; give one"),
            (self.eval_generate >= 0, "--eval-generate must be >= 0"),
            (self.metric_for_best in (None, *BEST_METRICS), f"--metric-for-best must be one of {', '.join(BEST_METRICS)}"),
            (self.metric_for_best is None or self.save_steps % self.eval_steps == 0, "--metric-for-best needs --save-steps to be a multiple of --eval-steps"),
            (self.early_stopping_patience is None or self.metric_for_best is not None, "--early-stopping-patience needs --metric-for-best"),
            (self.early_stopping_patience is None or self.early_stopping_patience >= 1, "--early-stopping-patience must be >= 1"),
        ])
        self.allow_changes = [n.strip().replace("-", "_") for item in self.allow_changes for n in item.split(",") if n.strip()]
        unknown = sorted(set(self.allow_changes) - set(SAFE_TO_CHANGE))
        if unknown:
            raise ConfigError(f"--allow-changes: {', '.join(unknown)} cannot change in a resumed run (only {', '.join(SAFE_TO_CHANGE)})")


@dataclass
class TrainConfig:
    """Options of ``model-garden train`` / ``train-vision``, by group."""

    model: ModelOptions = field(default_factory=ModelOptions)
    lora: LoraOptions = field(default_factory=LoraOptions)
    data: DataOptions = field(default_factory=DataOptions)
    mask: MaskOptions = field(default_factory=MaskOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    run: RunOptions = field(default_factory=RunOptions)

    @staticmethod
    def groups() -> dict[str, type]:
        """Group name -> its dataclass, in order."""
        return {f.name: f.default_factory for f in dataclasses.fields(TrainConfig)}  # type: ignore[misc]

    @classmethod
    def from_options(cls, where: dict[str, str] | None = None, **options: Any) -> TrainConfig:
        """A configuration from flat option names (``max_steps=50``), each checked
        against its type; ``where`` names the source of a value for errors."""
        return cls(**_sorted_into_groups(cls.groups(), options, where))

    def replace(self, **options: Any) -> TrainConfig:
        """A copy with some options changed (flat names)."""
        return TrainConfig.from_options(**{**self.flat(), **options})

    def flat(self) -> dict[str, Any]:
        """Every option by its flat name."""
        return {k: v for group in self.to_dict().values() for k, v in group.items()}

    def mask_config(self) -> MaskConfig:
        return self.mask.mask_config()

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        """Write the resolved configuration as grouped YAML."""
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")


def _sorted_into_groups(groups: dict[str, type], options: dict[str, Any], where: dict[str, str] | None) -> dict[str, Any]:
    owner = {f.name: g for g, cls in groups.items() for f in dataclasses.fields(cls)}
    values: dict[str, dict[str, Any]] = {g: {} for g in groups}
    for name, value in options.items():
        if name not in owner:
            raise ConfigError(f"{(where or {}).get(name, '')}unknown option {name!r}")
        values[owner[name]][name] = value
    return {g: build(groups[g], values[g], where) for g in groups}


def read_config_file(path: str | Path | None, groups: dict[str, type]) -> tuple[dict[str, Any], dict[str, str]]:
    """The options of a ``--config`` YAML file, flat (grouped keys are flattened), and
    where each came from (``run.yaml line 4: ``) for error messages."""
    if not path:
        return {}, {}
    values, lines = read_yaml(path)
    known = {f.name for cls in groups.values() for f in dataclasses.fields(cls)}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in groups and isinstance(value, dict):
            flat.update({str(k).replace("-", "_"): v for k, v in value.items()})
        elif name in known:
            flat[name] = value
        else:
            raise ConfigError(f"--config {path} line {lines.get(name, '?')}: unknown option {key!r}")
    where = {name: f"--config {path} line {lines.get(name, '?')}: " for name in flat}
    return flat, where


def read_options(
    path: str | Path | None,
    groups: dict[str, type],
    overrides: dict[str, Any],
    on_translate: Callable[[Translation], None] | None = None,
) -> tuple[dict[str, Any], dict[str, str], Translation | None]:
    """The options of a ``--config`` file (a TRL or Axolotl file translated first, see
    training/foreign.py, and shown to ``on_translate``), then the flags that were given
    (not None); where each came from; and the translation, if there was one."""
    own = {f.name for cls in groups.values() for f in dataclasses.fields(cls)}
    foreign = translate(path, own) if path else None
    if foreign and on_translate:
        on_translate(foreign)
    values, where = (foreign.values, foreign.where) if foreign else read_config_file(path, groups)
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    for name in given:
        where.pop(name, None)
    return values, where, foreign


def load_config(path: str | Path | None, overrides: dict[str, Any], on_translate: Callable[[Translation], None] | None = None) -> TrainConfig:
    """Defaults, then the YAML file (``read_options``), then the flags that were given.

    Raises:
        ConfigError: naming the file, line and option, or the flag with a bad value.
    """
    values, where, _ = read_options(path, TrainConfig.groups(), overrides, on_translate)
    return TrainConfig.from_options(where, **values)


if __name__ == "__main__":
    for group, cls in TrainConfig.groups().items():
        print(f"[{group}]")
        for name, text in field_docs(cls).items():
            print(f"  {flag(name):32} {text}")
