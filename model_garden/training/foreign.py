"""TRL and Axolotl YAML configs read by ``train --config``: each key becomes the option
that means the same, or is refused with the reason; nothing is dropped unsaid.

``translate`` tells the dialect by the keys only TRL (``SFTConfig``, ``ModelConfig``,
``ScriptArguments``) or only Axolotl (``utils/schemas``) has; a file without such a key
is model-garden's own and left to ``read_config_file``. Where a framework's default for
an absent key changes the run (TRL without ``use_peft`` and Axolotl without ``adapter``
train every weight; TRL's learning rate is 2e-5), the default is translated too, and
printed as such. Model-garden's own flat keys (``mask_strategy: moderate``) may stand
beside the foreign ones. ``docs/migrate.md`` has the tables.

Try it: ``model-garden train --config trl.yaml`` prints the translation, then trains.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_garden.data.sample import LAYOUTS, ROLES, SHAREGPT_ROLES
from model_garden.options import ConfigError, flag, read_yaml

# A rule turns a key's value (and the mapping it sits in) into options, or into a note
# when the value says what is already so; otherwise it raises Refused. A dict of rules
# in its place reads a list of one mapping (a dataset entry).
Rule = Callable[[Any, dict[str, Any]], dict[str, Any] | str]


class Refused(Exception):
    """The value has no model-garden counterpart; the message says why."""


def to(option: str, convert: Callable[[Any], Any] = lambda v: v) -> Rule:
    return lambda v, _: {option: convert(v)}


def only(allowed: tuple[Any, ...], note: str, why: str) -> Rule:
    """Accept the values in ``allowed`` (they say what is already so), refuse the others."""

    def rule(v: Any, _: dict[str, Any]) -> str:
        if v in allowed:
            return note
        raise Refused(why)

    return rule


def refuse(why: str) -> Rule:
    return only((None,), "(not set)", why)


def _num(v: Any) -> Any:
    """YAML reads ``2e-4`` (no dot) as a string; TRL's parser and Axolotl's schema read a number."""
    try:
        return float(v) if isinstance(v, str) else v
    except ValueError:
        return v  # check_value names the option and the type expected


def _bf16(v: Any) -> Any:
    return {True: "true", False: "false", None: "auto"}[v] if isinstance(v, bool) or v is None else v


def _lora_target(v: Any, _: dict[str, Any]) -> dict[str, Any] | str:
    if v in (None, "all-linear"):
        return "(model-garden's default: the attention and MLP projections of the language model)"
    if isinstance(v, list):  # PEFT matches a list of names as module-name suffixes
        return {"lora_target": r".*\.(?:" + "|".join(re.escape(str(n)) for n in v) + ")$"}
    return {"lora_target": v}  # PEFT reads one string as a regex, as --lora-target does


def _push(v: Any, values: dict[str, Any]) -> str:
    if v and not values.get("hub_model_id"):
        raise Refused("model-garden pushes to a named repository: give hub_model_id: USER/NAME")
    return "(to hub_model_id)" if v else "(not pushed)"


def _trl_eval(v: Any, values: dict[str, Any]) -> dict[str, Any] | str:
    if "eval_dataset" in values:
        return "(on eval_dataset)"
    if v in (None, "no"):
        return "(no evaluation)"
    if v != "steps":
        raise Refused("model-garden evaluates every --eval-steps steps: give eval_strategy: steps")
    name = values.get("dataset_name")
    if not name or Path(str(name)).exists():  # TRL's script evaluates dataset_test_split of dataset_name
        raise Refused("a local file has no test split: add eval_dataset: FILE (a model-garden key)")
    return {"eval_dataset": name}


PACKING = ("model-garden does not pack sequences: padding-free packing would need an attention implementation "
           "that keeps sequences apart")
ACCELERATE = "use accelerate launch --config_file (docs/scaling.md)"
ONLY_REPLIES = "model-garden trains only the assistant's replies (and their end-of-turn token), never the prompt"
ATTENTION = "model-garden loads transformers' default attention (sdpa where the model has it)"
ONE_EVAL = "give an evaluation file as test_datasets (or eval_dataset: FILE)"
WARMUP = only((None, 0), "(no warmup)", "model-garden sets warmup as a fraction of the steps: give warmup_ratio (5 of 60 steps: 0.08)")
ONE_FILE = {k: refuse("give one file or folder as path") for k in ("data_files", "data_dir", "columns", "fraction")}

# TRL 1.16: ScriptArguments, ModelConfig, SFTConfig (TrainingArguments), DatasetMixtureConfig.
# completion_only_loss / assistant_only_loss: TRL's response-only loss is what every
# model-garden strategy does, so they are accepted and --mask-strategy keeps its default,
# auto, which is TRL's loss on replies that are not JSON and weights JSON structure 0.1
# (docs/selective-loss.md); --mask-strategy none is TRL's loss on every reply.
TRL: dict[str, Any] = {
    "model_name_or_path": to("base_model"), "dtype": to("dtype"),
    "model_revision": only(("main",), "(the latest)", "--base-model takes a local folder: download the revision there"),
    "attn_implementation": only((None, "sdpa"), "(sdpa)", ATTENTION),
    "use_peft": lambda v, _: {"full_finetune": not v if isinstance(v, bool) else v},
    "lora_r": to("lora_r"), "lora_alpha": to("lora_alpha"), "lora_dropout": to("lora_dropout", _num),
    "lora_target_modules": _lora_target, "use_dora": only((False,), "(plain LoRA)", "model-garden trains plain LoRA"),
    "load_in_4bit": to("load_in_4bit"), "load_in_8bit": only((False,), "(no)", "model-garden loads a 4-bit (QLoRA) or full base"),
    "dataset_name": to("dataset"), "dataset_config": to("data_name"), "dataset_train_split": to("data_split"),
    "dataset_test_split": to("eval_split"), "dataset_streaming": only((False,), "(no)", "model-garden reads datasets memory-mapped"),
    "dataset_num_proc": to("num_proc"),
    "datasets": {"path": to("dataset"), "name": to("data_name"), "split": to("data_split"), **ONE_FILE},
    "dataset_text_field": only(("text",), "(unused)", f"model-garden reads {LAYOUTS}"),
    "chat_template_path": to("chat_template"),  # a Jinja file (a tokenizer folder is refused by --chat-template)
    "max_length": to("max_length"), "max_seq_length": to("max_length"),  # max_seq_length: TRL before 0.20
    "packing": only((False,), "(no packing)", PACKING), "padding_free": only((False,), "(padded)", PACKING),
    "completion_only_loss": only((None, True), "(replies only, as model-garden always trains)", ONLY_REPLIES),
    "assistant_only_loss": only((True,), "(replies only, as model-garden always trains)", ONLY_REPLIES),
    "output_dir": to("output"), "learning_rate": to("lr", _num), "per_device_train_batch_size": to("batch_size"),
    "gradient_accumulation_steps": to("grad_accum"), "num_train_epochs": to("epochs", _num), "max_steps": to("max_steps"),
    "lr_scheduler_type": to("lr_scheduler"), "warmup_ratio": to("warmup_ratio", _num), "warmup_steps": WARMUP,
    "weight_decay": to("weight_decay", _num), "optim": to("optim"), "max_grad_norm": to("max_grad_norm", _num), "seed": to("seed"),
    "bf16": to("bf16", _bf16), "fp16": only((False,), "(no)", "model-garden trains in bf16 autocast or float32"),
    "gradient_checkpointing": to("gradient_checkpointing"),
    "gradient_checkpointing_kwargs": only((None, {"use_reentrant": False}), "(non-reentrant, as model-garden's)", "model-garden checkpoints non-reentrant"),
    "logging_steps": to("logging_steps"), "save_steps": to("save_steps"), "save_total_limit": to("save_total_limit"),
    "eval_steps": to("eval_steps"), "eval_strategy": _trl_eval, "per_device_eval_batch_size": refuse("model-garden evaluates at --batch-size"),
    # --report-to names one integration: a longer list fails its type check, naming the line.
    "report_to": to("report_to", lambda v: v[0] if isinstance(v, list) and len(v) == 1 else v),
    "push_to_hub": _push, "hub_model_id": to("push_to_hub"),
    "resume_from_checkpoint": to("resume", lambda v: "latest" if v is True else v or None),
    "dataloader_num_workers": to("dataloader_workers"), "group_by_length": to("group_by_length"),
    "load_best_model_at_end": only((False,), "(the last checkpoint)", "model-garden keeps the best checkpoint by --metric-for-best"),
    "deepspeed": refuse(ACCELERATE), "fsdp": refuse(ACCELERATE), "fsdp_config": refuse(ACCELERATE),
}

AXOLOTL_TEMPLATES = {"qwen_25": "qwen2_5", "phi_3": "phi3", "phi_35": "phi3_5"}  # Axolotl's names for TRL's files


def _chat_template(v: Any, _: dict[str, Any]) -> dict[str, Any] | str:
    if v in ("tokenizer_default", "jinja"):
        return "(the model's own)" if v == "tokenizer_default" else "(chat_template_jinja)"
    if str(v).startswith("tokenizer_default_fallback_"):
        raise Refused("model-garden renders with the model's template unless one is named: name it, or drop the key")
    return {"chat_template": AXOLOTL_TEMPLATES.get(str(v), v)}


def _jinja(v: Any, _: dict[str, Any]) -> dict[str, Any]:
    if "{{" in str(v) or "{%" in str(v):
        raise Refused("--chat-template reads a template from a file: save it as a .jinja file and give its path")
    return {"chat_template": v}


def _sharegpt(entry: dict[str, Any]) -> bool:
    return (entry.get("field_messages") or ("conversations" if entry.get("type") == "sharegpt" else "messages")) == "conversations"


def _properties(v: Any, entry: dict[str, Any]) -> str:
    """data/sample.py reads role/content in 'messages', and also from/value in 'conversations'."""
    readable = {"role": ("role", "from"), "content": ("content", "value")} if _sharegpt(entry) else {"role": ("role",), "content": ("content",)}
    if isinstance(v, dict) and all(s in readable.get(k, ()) for k, s in v.items()):
        return "(keys model-garden reads)"
    raise Refused("model-garden reads role/content in 'messages', and from/value or role/content in 'conversations'")


def _roles(v: Any, entry: dict[str, Any]) -> str:
    known = SHAREGPT_ROLES if _sharegpt(entry) else {r: r for r in ROLES}
    if isinstance(v, dict) and all(known.get(s) == t for t, names in v.items() for s in names or []):
        return "(role names model-garden reads)"
    raise Refused("model-garden reads these role names: " + ", ".join(f"{s} -> {t}" for s, t in known.items()))


def _axolotl_dataset(eval_: bool) -> dict[str, Any]:
    return {
        "path": to("eval_dataset" if eval_ else "dataset"), "split": to("eval_split" if eval_ else "data_split"), "name": to("data_name"),
        "type": only(("chat_template", "sharegpt"), "(chat records)", f"model-garden reads chat records ({LAYOUTS}): type chat_template "
                     "(field_messages: messages or conversations) or sharegpt; convert the records to one of these"),
        "field_messages": only(("messages", "conversations"), "(a key model-garden reads)", "model-garden reads 'messages' or 'conversations'"),
        "message_property_mappings": _properties, "message_field_role": lambda v, e: _properties({"role": v}, e),
        "message_field_content": lambda v, e: _properties({"content": v}, e), "roles": _roles,
        "roles_to_train": only((["assistant"], ["gpt"]), "(assistant turns)", "model-garden trains the assistant's turns only"),
        "train_on_eos": only(("turn",), "(each reply's end-of-turn token)", "model-garden trains the end-of-turn token of each reply"),
        "chat_template": _chat_template, "chat_template_jinja": _jinja, "field_tools": only(("tools",), "(tools)", "model-garden reads 'tools'"),
        "ds_type": only(("json", "parquet", "arrow"), "(read from the path)", "model-garden reads jsonl, json, parquet and arrow"),
        "drop_system_message": only((False,), "(kept)", "model-garden keeps the system turn"), "data_files": ONE_FILE["data_files"],
    }


def _adapter(v: Any, _: dict[str, Any]) -> dict[str, Any]:
    if v not in ("lora", "qlora"):
        raise Refused("model-garden trains LoRA, QLoRA (adapter: qlora) or every weight (no adapter)")
    return {"full_finetune": False, **({"load_in_4bit": True} if v == "qlora" else {})}


def _causal_lm(v: Any, _: dict[str, Any]) -> str:
    if str(v).endswith("ForCausalLM"):
        return "(loaded with AutoModelForCausalLM)"
    raise Refused("model-garden fine-tunes causal LMs (vision-language models with train-vision)")


def _target_linear(v: Any, values: dict[str, Any]) -> str:
    if v and values.get("lora_target_modules"):
        raise Refused("give one of lora_target_linear and lora_target_modules")
    return "(model-garden's default: the attention and MLP projections of the language model)" if v else "(lora_target_modules)"


# Axolotl's utils/schemas (config, training, peft, model, datasets). train_on_inputs: false
# is response-only loss, accepted as completion_only_loss is for TRL.
AXOLOTL: dict[str, Any] = {
    "base_model": to("base_model"), "model_type": _causal_lm,
    "tokenizer_type": lambda v, _: "(loaded with AutoTokenizer)", "strict": lambda v, _: "(flags override the file)",
    "load_in_4bit": to("load_in_4bit"), "load_in_8bit": only((False,), "(no)", "model-garden loads a 4-bit (QLoRA) or full base"),
    "adapter": _adapter, "lora_model_dir": refuse("model-garden starts a new adapter; continue a run with --resume"),
    "lora_r": to("lora_r"), "lora_alpha": to("lora_alpha"), "lora_dropout": to("lora_dropout", _num),
    "lora_target_modules": _lora_target, "lora_target_linear": _target_linear,
    "datasets": _axolotl_dataset(False), "test_datasets": _axolotl_dataset(True),
    "val_set_size": only((0, 0.0), "(no split)", "model-garden does not split evaluation records off the training set: " + ONE_EVAL),
    "dataset_prepared_path": lambda v, _: "(model-garden tokenizes on the fly)", "dataset_processes": to("num_proc"), "chat_template": _chat_template, "chat_template_jinja": _jinja,
    "special_tokens": refuse("model-garden never adds or changes special tokens (padding is masked by position)"),
    "sequence_len": to("max_length"), "sample_packing": only((False,), "(no packing)", PACKING),
    "eval_sample_packing": only((False,), "(no packing)", PACKING),
    "pad_to_sequence_len": only((False,), "(padded to the longest)", "model-garden pads each batch to its longest example"),
    "train_on_inputs": only((False,), "(replies only, as model-garden always trains)", ONLY_REPLIES),
    "micro_batch_size": to("batch_size"), "gradient_accumulation_steps": to("grad_accum"), "num_epochs": to("epochs", _num),
    "max_steps": to("max_steps"), "learning_rate": to("lr", _num), "lr_scheduler": to("lr_scheduler"),
    "warmup_ratio": to("warmup_ratio", _num), "warmup_steps": WARMUP, "weight_decay": to("weight_decay", _num),
    "optimizer": to("optim"), "max_grad_norm": to("max_grad_norm", _num), "seed": to("seed"),
    "bf16": to("bf16", _bf16), "fp16": only((False,), "(no)", "model-garden trains in bf16 autocast or float32"),
    "tf32": only((False, "auto"), "(PyTorch's setting)", "model-garden leaves TF32 at PyTorch's setting"),
    "gradient_checkpointing": to("gradient_checkpointing"), "flash_attention": only((False,), "(sdpa)", ATTENTION),
    "output_dir": to("output"), "logging_steps": to("logging_steps"), "eval_steps": to("eval_steps"), "save_steps": to("save_steps"),
    "save_total_limit": to("save_total_limit"), "evals_per_epoch": refuse("give eval_steps"), "saves_per_epoch": refuse("give save_steps"),
    "early_stopping_patience": refuse("model-garden stops early by --metric-for-best with --early-stopping-patience"),
    "resume_from_checkpoint": to("resume"), "hub_model_id": to("push_to_hub"), "dataloader_num_workers": to("dataloader_workers"),
    "group_by_length": to("group_by_length"), "use_tensorboard": lambda v, _: {"report_to": "tensorboard" if v else "none"},
    **{k: refuse("model-garden reports to wandb with --report-to wandb; the WANDB_* environment variables name the run")
       for k in ("wandb_project", "wandb_entity", "wandb_watch", "wandb_name", "wandb_log_model")},
    "deepspeed": refuse(ACCELERATE), "fsdp": refuse(ACCELERATE), "fsdp_config": refuse(ACCELERATE),
}


@dataclass(frozen=True)
class Dialect:
    """A foreign config format: its rules, and its defaults that differ from model-garden's
    (option -> (value, the key that would set it)), applied where no key set the option."""

    name: str
    rules: dict[str, Any]
    defaults: dict[str, tuple[Any, str]]
    lora_switch: str  # what turns LoRA on: without it the framework trains every weight
    drop_nulls: bool  # Axolotl's schema reads null as not set; TRL's `max_length: null` means no truncation


DIALECTS = (
    Dialect("TRL", TRL, {"full_finetune": (True, "use_peft"), "lr": (2e-5, "learning_rate"), "epochs": (3.0, "num_train_epochs"),
                         "batch_size": (8, "per_device_train_batch_size"), "max_length": (1024, "max_length"),
                         "lora_dropout": (0.05, "lora_dropout"), "seed": (42, "seed")}, "use_peft: true", False),
    Dialect("Axolotl", AXOLOTL, {"full_finetune": (True, "adapter"), "batch_size": (1, "micro_batch_size"),
                                 "max_length": (512, "sequence_len"), "lr_scheduler": ("cosine", "lr_scheduler"), "seed": (42, "seed")},
            "adapter: lora", True),
)


@dataclass
class Translation:
    """A foreign config as options: ``values`` and ``where`` are for ``TrainConfig.from_options``,
    ``lines`` say how each key was read."""

    path: str
    dialect: str
    values: dict[str, Any] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


def _show(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return {True: "true", False: "false", None: "null"}[v]
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_show(x)}" for k, x in v.items()) + "}"
    return "[" + ", ".join(map(_show, v)) + "]" if isinstance(v, list) else str(v)


def _flags(options: dict[str, Any]) -> str:
    return " ".join((flag(k) if v else "--no-" + flag(k)[2:]) if isinstance(v, bool) else f"{flag(k)} {_show(v)}" for k, v in options.items())


def translate(path: str | Path, own: set[str]) -> Translation | None:
    """The options a TRL or Axolotl ``--config`` file means; None for a file without a key
    only TRL or Axolotl has (``own``: model-garden's option names, which may stand beside).

    Raises:
        ConfigError: a refused, unknown or conflicting key, naming the file, line and key.
    """
    raw, lines = read_yaml(path)
    values = {str(k).replace("-", "_"): v for k, v in raw.items()}
    trl, axolotl = (set(d.rules) for d in DIALECTS)
    # The dialect with more keys of its own; in a tie TRL, and the other's keys are refused as unknown.
    foreign = set(values) - own
    counts = [len(foreign & (trl - axolotl)), len(foreign & (axolotl - trl))]
    if not max(counts):
        return None
    dialect = DIALECTS[counts.index(max(counts))]
    out = Translation(str(path), dialect.name)
    source: dict[str, str] = {}  # option -> the key that set it

    def put(options: dict[str, Any], key: str, place: str) -> None:
        for option, v in options.items():
            if option in out.values and out.values[option] != v:
                raise ConfigError(f"{place}: {key} sets {flag(option)} {_show(v)}, but {source[option]} set it to {_show(out.values[option])}")
            out.values[option], out.where[option], source[option] = v, f"{place} ({key}): ", key

    def read(mapping: dict[str, Any], rules: dict[str, Any], prefix: str, line: int | None) -> None:
        for key, v in mapping.items():
            name, place = prefix + key, f"--config {path} line {line or lines.get(key, '?')}"
            if v is None and dialect.drop_nulls:
                continue
            rule = rules.get(key) or (to(key) if not prefix and key in own else None)
            if rule is None:
                close = difflib.get_close_matches(key, [*rules, *(() if prefix else own)], n=1, cutoff=0.7)
                hint = f"did you mean {close[0]}?" if close else "docs/migrate.md lists the keys it translates"
                raise ConfigError(f"{place}: {name!r}: model-garden knows no such {dialect.name} key; {hint}")
            if isinstance(rule, dict):
                if not (isinstance(v, list) and len(v) == 1 and isinstance(v[0], dict)):
                    raise ConfigError(f"{place}: {name}: model-garden trains on one dataset: give a list of one entry (path: ...)")
                read(v[0], rule, f"{name}[0].", lines.get(key))
                continue
            try:
                result = rule(v, mapping)
            except Refused as exc:
                raise ConfigError(f"{place}: {name}: {_show(v)} is not supported: {exc}") from None
            if isinstance(result, dict):
                put(result, name, place)
            out.lines.append(f"{name}: {_show(v)}  ->  {_flags(result) if isinstance(result, dict) else result}")

    read(values, dialect.rules, "", None)
    lora = next((k for k, v in values.items() if k.startswith("lora_") and v is not None), None)
    if lora and "full_finetune" not in out.values:
        raise ConfigError(f"--config {path} line {lines.get(lora, '?')}: {lora} is set but not {dialect.lora_switch}: "
                          f"{dialect.name} would train every weight and ignore it; add {dialect.lora_switch}")
    for option, (v, key) in dialect.defaults.items():
        if option not in out.values:
            put({option: v}, f"{dialect.name}'s default for {key}", f"--config {path}")
            out.lines.append(f"{key}: (not set: {dialect.name}'s default)  ->  {_flags({option: v})}")
    return out
