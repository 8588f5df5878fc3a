"""TRL and Axolotl YAML configs given to ``train --config`` unchanged: each trains a tiny
model and the run's config.yaml holds what it set; refused and misspelt keys are one
line with the file, the line and the reason; the examples of docs/migrate.md are read
as they are, its tables name every key, and its Unsloth command equals its config.

Run: ``.venv/bin/python -m pytest tests/test_foreign_configs.py -q``
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from model_garden.cli import app
from model_garden.options import ConfigError
from model_garden.training.config import TrainConfig, load_config
from model_garden.training.foreign import AXOLOTL, TRL, _axolotl_dataset, translate
from model_garden.training.model_setup import DEFAULT_LORA_TARGET
from model_garden.training.run import train
from test_training import _dataset

MIGRATE = Path(__file__).resolve().parents[1] / "docs" / "migrate.md"
OWN = set(TrainConfig().flat())


def _trl(model: Path, data: Path, out: Path) -> str:
    return f"""\
# trl sft --config sft.yaml
model_name_or_path: {model}
dataset_name: {data}
learning_rate: 3e-3
per_device_train_batch_size: 2
gradient_accumulation_steps: 2
max_steps: 2
max_length: 512
use_peft: true
lora_r: 4
lora_alpha: 8
lora_dropout: 0.0
lora_target_modules: [q_proj, v_proj]
assistant_only_loss: true
packing: false
gradient_checkpointing: true
bf16: false
lr_scheduler_type: constant
logging_steps: 1
save_steps: 50
seed: 7
report_to: none
output_dir: {out}
"""


def _axolotl(model: Path, data: Path, out: Path) -> str:
    return f"""\
base_model: {model}
model_type: AutoModelForCausalLM
tokenizer_type: AutoTokenizer
strict: false

chat_template: tokenizer_default
datasets:
  - path: {data}
    type: chat_template
    field_messages: messages
    message_property_mappings:
      role: role
      content: content
    roles_to_train: [assistant]
dataset_prepared_path:
val_set_size: 0
output_dir: {out}

sequence_len: 448
sample_packing: false
pad_to_sequence_len: false

adapter: lora
lora_r: 8
lora_alpha: 32
lora_dropout: 0.05
lora_target_linear: true

wandb_project:
wandb_entity:

gradient_accumulation_steps: 3
micro_batch_size: 1
num_epochs: 1
max_steps: 2
optimizer: adamw_torch
learning_rate: 0.002
train_on_inputs: false

bf16: false
tf32: false
gradient_checkpointing: true
logging_steps: 1
flash_attention: false
warmup_ratio: 0.0
save_steps: 50
weight_decay: 0.01
special_tokens:
"""


def _saved(out: Path) -> tuple[dict, dict]:
    """The run's config.yaml (grouped) and its adapter's PEFT config."""
    return yaml.safe_load((out / "config.yaml").read_text()), json.loads((out / "adapter_config.json").read_text())


@pytest.mark.integration
def test_trl_config_trains_unchanged_through_the_cli(tmp_path, tiny_model_dir):
    config, out = tmp_path / "sft.yaml", tmp_path / "run"
    config.write_text(_trl(tiny_model_dir, _dataset(tmp_path, 4), out))
    done = CliRunner().invoke(app, ["train", "--config", str(config)])
    assert done.exit_code == 0, done.output
    assert f"--config {config}: TRL keys, read as" in done.output
    assert "learning_rate: 3e-3  ->  --lr 0.003" in done.output and "packing: false  ->  (no packing)" in done.output
    saved, adapter = _saved(out)
    assert (saved["optim"]["lr"], saved["optim"]["batch_size"], saved["optim"]["grad_accum"], saved["optim"]["max_steps"]) == (0.003, 2, 2, 2)
    assert (saved["optim"]["seed"], saved["optim"]["lr_scheduler"], saved["data"]["max_length"]) == (7, "constant", 512)
    assert (saved["lora"]["lora_r"], saved["lora"]["lora_alpha"], saved["model"]["full_finetune"]) == (4, 8, False)
    assert saved["mask"]["mask_strategy"] == "auto"  # response-only is what every strategy does; auto is kept
    assert (adapter["r"], adapter["lora_alpha"], adapter["target_modules"]) == (4, 8, r".*\.(?:q_proj|v_proj)$")
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2


@pytest.mark.integration
def test_axolotl_config_trains_unchanged(tmp_path, tiny_model_dir):
    config, out = tmp_path / "lora.yml", tmp_path / "run"
    config.write_text(_axolotl(tiny_model_dir, _dataset(tmp_path, 6), out))
    result = train(load_config(config, {}))
    saved, adapter = _saved(out)
    assert (saved["optim"]["lr"], saved["optim"]["batch_size"], saved["optim"]["grad_accum"], saved["optim"]["max_steps"]) == (0.002, 1, 3, 2)
    assert (saved["optim"]["weight_decay"], saved["data"]["max_length"], saved["model"]["chat_template"]) == (0.01, 448, None)
    assert (saved["lora"]["lora_r"], saved["lora"]["lora_alpha"], saved["lora"]["lora_dropout"]) == (8, 32, 0.05)
    # Not in the file, so Axolotl's defaults: a cosine schedule, seed 42.
    assert (saved["optim"]["lr_scheduler"], saved["optim"]["seed"]) == ("cosine", 42)
    assert (adapter["r"], adapter["lora_alpha"], adapter["target_modules"]) == (8, 32, DEFAULT_LORA_TARGET)
    assert result.metrics["steps"] == 2


@pytest.mark.parametrize(("text", "message"), [
    ("model_name_or_path: m\nuse_peft: true\npacking: true\n",
     r"line 3: packing: true is not supported: model-garden does not pack sequences: padding-free packing would need"),
    ("model_name_or_path: m\nuse_peft: true\nlearnng_rate: 1e-4\n", r"line 3: 'learnng_rate': model-garden knows no such TRL key; did you mean learning_rate\?"),
    ("model_name_or_path: m\nlora_r: 8\n", r"line 2: lora_r is set but not use_peft: true: TRL would train every weight"),
    ("model_name_or_path: m\nuse_peft: true\nmax_length: 512\nmax_seq_length: 1024\n",
     r"line 4: max_seq_length sets --max-length 1024, but max_length set it to 512"),
    ("model_name_or_path: m\nuse_peft: true\nlearning_rate: 0\n", r"line 3 \(learning_rate\): --lr must be > 0"),
    ("base_model: m\nadapter: lora\ndeepspeed: zero2.json\n", r"line 3: deepspeed: zero2.json is not supported: .*docs/scaling.md"),
    ("base_model: m\nadapter: lora\nsample_packing: true\n", r"line 3: sample_packing: true is not supported: model-garden does not pack"),
    ("base_model: m\nadapter: lora\ntrain_on_inputs: true\n", r"line 3: train_on_inputs: true is not supported: .* never the prompt"),
    ("base_model: m\nadapter: lora\nval_set_size: 0.05\n", r"line 3: val_set_size: 0.05 is not supported: .*test_datasets"),
    ("base_model: m\nadapter: lora\ndatasets:\n  - path: a.jsonl\n  - path: b.jsonl\n", r"line 3: datasets: model-garden trains on one dataset"),
    ("base_model: m\nadapter: lora\ndatasets:\n  - path: a.jsonl\n    type: alpaca\n",
     r"line 3: datasets\[0\].type: alpaca is not supported: model-garden reads chat records .*type chat_template"),
    ("base_model: m\nadapter: lora\ndatasets:\n  - path: a.jsonl\n    type: chat_template\n    field_messages: chats\n",
     r"line 3: datasets\[0\].field_messages: chats is not supported: model-garden reads 'messages' or 'conversations'"),
    ("base_model: m\nadapter: lora\ndatasets:\n  - path: a.jsonl\n    message_property_mappings: {role: from, content: value}\n",
     r"line 3: datasets\[0\].message_property_mappings: \{role: from, content: value\} is not supported: .*from/value or role/content in 'conversations'"),
    ("base_model: m\nadapter: lora\ndatasets:\n  - path: a.jsonl\n    field_messages: conversations\n    roles: {assistant: [bot]}\n",
     r"line 3: datasets\[0\].roles: \{assistant: \[bot\]\} is not supported: model-garden reads these role names: system -> system, human -> user"),
    ("base_model: m\nadapter: lora\nchat_template: jinja\nchat_template_jinja: '{{ messages }}'\n", r"line 4: chat_template_jinja: .* save it as a .jinja file"),
    ("base_model: m\nadapter: lora\nmicro_batch_sise: 2\n", r"line 3: 'micro_batch_sise': model-garden knows no such Axolotl key; did you mean micro_batch_size\?"),
])
def test_refused_and_misspelt_keys_name_the_file_and_line(tmp_path, text, message):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=f"^--config {re.escape(str(config))} {message}"):
        load_config(config, {})


def test_refusal_through_the_cli_is_one_line(tmp_path):
    config = tmp_path / "sft.yaml"
    config.write_text("model_name_or_path: m\nuse_peft: true\npadding_free: true\n")
    done = CliRunner().invoke(app, ["train", "--config", str(config)])
    assert done.exit_code == 2 and "Traceback" not in done.output
    assert f"--config {config} line 3: padding_free: true is not supported: model-garden does not pack sequences" in " ".join(done.output.split())


def test_defaults_own_keys_and_the_translation_printed(tmp_path):
    config = tmp_path / "sft.yaml"
    config.write_text("model_name_or_path: m\ndataset_name: org/data\ndataset_test_split: validation\neval_strategy: steps\nmask_strategy: none\n")
    shown = []
    cfg = load_config(config, {"seed": 5}, shown.append)
    # Without use_peft TRL trains every weight, at its own defaults; flags still win.
    assert (cfg.model.full_finetune, cfg.optim.lr, cfg.optim.epochs, cfg.optim.batch_size, cfg.data.max_length) == (True, 2e-5, 3.0, 8, 1024)
    assert (cfg.optim.seed, cfg.mask.mask_strategy) == (5, "none")
    assert (cfg.data.dataset, cfg.data.eval_dataset, cfg.data.eval_split) == ("org/data", "org/data", "validation")
    assert "use_peft: (not set: TRL's default)  ->  --full-finetune" in shown[0].lines
    assert "mask_strategy: none  ->  --mask-strategy none" in shown[0].lines
    axolotl = tmp_path / "qlora.yml"
    axolotl.write_text("base_model: m\nadapter: qlora\nload_in_4bit: true\nchat_template: qwen_25\nlearning_rate: 2e-4\n")
    cfg = load_config(axolotl, {})
    assert (cfg.model.load_in_4bit, cfg.model.full_finetune, cfg.model.chat_template, cfg.optim.lr) == (True, False, "qwen2_5", 2e-4)
    assert (cfg.optim.batch_size, cfg.data.max_length) == (1, 512)  # Axolotl's micro_batch_size and sequence_len defaults
    own = tmp_path / "run.yaml"
    own.write_text("lr: 0.001\nlora_r: 4\noptim: {max_steps: 3}\n")
    assert translate(own, OWN) is None  # model-garden's own file is read as before
    cfg = load_config(own, {})
    assert (cfg.optim.lr, cfg.optim.max_steps, cfg.lora.lora_r) == (0.001, 3, 4)


def _section(title: str) -> str:
    text = MIGRATE.read_text(encoding="utf-8")
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _block(title: str, lang: str) -> str:
    return re.findall(rf"```{lang}\n(.*?)```", _section(title), re.S)[0]


def test_docs_examples_are_read_and_the_unsloth_command_equals_its_config(tmp_path):
    dialects = {}
    for title, name in (("From TRL", "sft.yaml"), ("From Axolotl", "lora.yml"), ("From an Unsloth notebook", "unsloth.yaml")):
        (tmp_path / name).write_text(_block(title, "yaml"))
        dialects[name] = translate(tmp_path / name, OWN).dialect
        load_config(tmp_path / name, {})
    assert dialects == {"sft.yaml": "TRL", "lora.yml": "Axolotl", "unsloth.yaml": "TRL"}
    from_yaml = load_config(tmp_path / "unsloth.yaml", {}).flat()
    words = shlex.split(_block("From an Unsloth notebook", "bash").replace("\\\n", " "))
    assert words[:2] == ["model-garden", "train"]
    params = typer.main.get_command(app).commands["train"].make_context("train", words[2:]).params
    from_command = load_config(None, {**{k: v for k, v in params.items() if k != "config"}, "vision": False}).flat()
    differ = {k for k in from_yaml if from_yaml[k] != from_command[k]}
    # The YAML lists the notebook's target modules, the command leaves model-garden's default
    # (the same projections); epochs are TRL's default of 3 there, ignored beside max_steps.
    assert differ == {"lora_target", "epochs"}, differ
    assert (from_yaml["lr"], from_yaml["batch_size"], from_yaml["grad_accum"], from_yaml["seed"], from_yaml["load_in_4bit"]) == (2e-4, 2, 4, 3407, True)
    modules = [f"model.layers.0.{m}" for m in ("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj", "mlp.act_fn")] + ["lm_head"]
    assert [m for m in modules if re.fullmatch(from_yaml["lora_target"], m)] == [m for m in modules if re.fullmatch(DEFAULT_LORA_TARGET, m)]


def _table_keys(title: str) -> set[str]:
    """The keys in the first column of the section's tables (``packing: false`` gives packing)."""
    rows = [line.split("|")[1] for line in _section(title).splitlines() if line.startswith("| `")]
    return {key.split(":")[0] for row in rows for key in re.findall(r"`([^`]+)`", row)}


def test_docs_tables_name_every_key_and_trl_keys_are_trls():
    assert _table_keys("From TRL") == set(TRL)
    entry = set(_axolotl_dataset(False))
    assert _table_keys("From Axolotl") == set(AXOLOTL) | entry
    trl = pytest.importorskip("trl")
    from trl.scripts.utils import DatasetConfig

    fields = {f.name for cls in (trl.SFTConfig, trl.ModelConfig, trl.ScriptArguments, trl.DatasetMixtureConfig) for f in dataclasses.fields(cls)}
    # Older names: TRL before 0.20 (max_seq_length) and transformers 4 (warmup_ratio, group_by_length).
    assert set(TRL) - fields == {"max_seq_length", "warmup_ratio", "group_by_length"}
    assert set(TRL["datasets"]) <= {f.name for f in dataclasses.fields(DatasetConfig)}
