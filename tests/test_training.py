"""Training: exact loss normalisation, chunked loss, resume, weight policies, learning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from model_garden.masking import MaskConfig, build_example
from model_garden.training.config import TrainConfig, load_config
from model_garden.training.loss import reference_lm_loss, weighted_lm_loss
from model_garden.training.run import train

REPO = Path(__file__).resolve().parents[1]


def _example_lines(n: int) -> list[dict]:
    rows = [json.loads(line) for line in (REPO / "model_garden/assets/example.jsonl").read_text(encoding="utf-8").splitlines()]
    out = []
    for i in range(n):
        row = json.loads(json.dumps(rows[i % len(rows)]))
        # Different lengths per example make a wrong normaliser visible.
        row["messages"][1]["content"] += " x" * (7 * i)
        out.append(row)
    return out


def _dataset(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _example_lines(n)), encoding="utf-8")
    return path


class GradCapture(TrainerCallback):
    """Gradients of the first optimizer step (after accumulation, before the update)."""

    def __init__(self):
        self.grads = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.grads is None:
            self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _cfg(model_dir: Path, data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        base_model=str(model_dir), dataset=str(data), output=str(out), full_finetune=True, bf16="false",
        optim="sgd", lr=0.1, max_grad_norm=0.0, report_to="none", max_steps=1, logging_steps=1, save_steps=1000,
        mask_strategy="conservative", structural_weight=0.3,
    )
    base.update(kw)
    return TrainConfig.from_options(**base)


def test_chunked_loss_matches_plain_path_and_gradients():
    torch.manual_seed(0)
    head = torch.nn.Linear(32, 500, bias=True)
    hidden = torch.randn(3, 11, 32, requires_grad=True)
    labels = torch.randint(0, 500, (3, 11))
    labels[:, :4] = -100
    weights = torch.rand(3, 11) * (labels != -100)
    norm = 7.5
    a = weighted_lm_loss(hidden, head, labels, weights, norm, chunk=5)
    ga = torch.autograd.grad(a, [hidden, head.weight, head.bias])
    b = reference_lm_loss(head(hidden), labels, weights, norm)
    gb = torch.autograd.grad(b, [hidden, head.weight, head.bias])
    assert torch.allclose(a, b, atol=1e-5)
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, atol=1e-5)


def test_batch_4x1_equals_batch_1x4(tmp_path, tiny_model_dir):
    data = _dataset(tmp_path, 4)
    runs = []
    for bs, ga in ((4, 1), (1, 4)):
        cap = GradCapture()
        train(_cfg(tiny_model_dir, data, tmp_path / f"b{bs}", batch_size=bs, grad_accum=ga), callbacks=[cap])
        runs.append(cap.grads)
    assert runs[0].keys() == runs[1].keys() and runs[0]
    # Not vacuous: examples carry different loss weight, so averaging per micro-batch
    # (the classic accumulation bug) would weight them differently.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = MaskConfig("conservative", structural_weight=0.3)
    sums = {round(sum(build_example(tok, r["messages"], cfg)["loss_weights"]), 3) for r in _example_lines(4)}
    assert len(sums) > 1
    for name in runs[0]:
        assert torch.allclose(runs[0][name], runs[1][name], atol=1e-6, rtol=1e-4), name


DDP_WORKER = """
import sys, torch, json
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_training import GradCapture, _cfg
from model_garden.training.run import train
cap = GradCapture()
out = Path({out!r})
train(_cfg(Path({model!r}), Path({data!r}), out, batch_size=2, grad_accum=1), callbacks=[cap])
if torch.distributed.get_rank() == 0:
    torch.save(cap.grads, out / "grads.pt")
"""


@pytest.mark.integration
@pytest.mark.slow
def test_two_process_ddp_equals_one_process(tmp_path, tiny_model_dir):
    data = _dataset(tmp_path, 4)
    single = GradCapture()
    train(_cfg(tiny_model_dir, data, tmp_path / "single", batch_size=4), callbacks=[single])
    script = tmp_path / "worker.py"
    out = tmp_path / "ddp"
    script.write_text(DDP_WORKER.format(tests=str(REPO / "tests"), out=str(out), model=str(tiny_model_dir), data=str(data)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533", str(script)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = torch.load(out / "grads.pt")
    assert ddp.keys() == single.grads.keys()
    for name in ddp:
        assert torch.allclose(ddp[name], single.grads[name], atol=1e-6, rtol=1e-4), name


class InterruptAt(TrainerCallback):
    """Send ourselves SIGINT after a given step, as a user pressing Ctrl-C would."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path, tiny_model_dir):
    data = _dataset(tmp_path, 6)
    common = dict(batch_size=2, max_steps=6, optim="adamw_torch", lr=1e-3, structural_keep_prob=0.3, max_grad_norm=1.0,
                  eval_dataset=str(data), eval_steps=2)
    straight = train(_cfg(tiny_model_dir, data, tmp_path / "straight", **common))
    first = train(_cfg(tiny_model_dir, data, tmp_path / "resumed", **common), callbacks=[InterruptAt(3)])
    assert first.interrupted
    stopped = first.metrics["interrupted_at_step"]
    assert 3 <= stopped < 6  # the step the signal arrived in, or the next one
    assert (tmp_path / f"resumed/checkpoints/checkpoint-{stopped}").is_dir()
    second = train(_cfg(tiny_model_dir, data, tmp_path / "resumed", resume="latest", **common))
    assert not second.interrupted and second.metrics["steps"] == 6
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    # The eval curve keeps its step-0 point across the resume.
    want, got = straight.metrics["eval_value_loss"], second.metrics["eval_value_loss"]
    assert [s for s, _ in got] == [s for s, _ in want] == [0, 2, 4, 6]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-5)
    # The training time counts both sittings: the checkpoint carries the first one's.
    state = json.loads((tmp_path / f"resumed/checkpoints/checkpoint-{stopped}/trainer_state.json").read_text())
    first_sitting = state["stateful_callbacks"]["TrainClock"]["attributes"]["seconds"]
    assert 0 < first_sitting < second.metrics["train_runtime_s"]


def test_early_stopping_patience_survives_a_resume(tmp_path, tiny_model_dir):
    """A diverging run (SGD at lr 5: the eval loss grows at every step) stops when its
    patience runs out, at the same step whether or not it was interrupted in between."""
    data = _dataset(tmp_path, 6)
    common = dict(batch_size=2, max_steps=10, optim="sgd", lr=5.0, eval_dataset=str(data), eval_steps=1, save_steps=1,
                  metric_for_best="value_loss", early_stopping_patience=2)
    straight = train(_cfg(tiny_model_dir, data, tmp_path / "straight", **common))
    losses = [v for _, v in straight.metrics["eval_value_loss"]]
    assert straight.metrics["steps"] == 3 and losses == sorted(losses)
    first = train(_cfg(tiny_model_dir, data, tmp_path / "resumed", **common), callbacks=[InterruptAt(1)])
    assert first.interrupted and first.metrics["interrupted_at_step"] == 2  # one worse evaluation counted
    second = train(_cfg(tiny_model_dir, data, tmp_path / "resumed", resume="latest", **common))
    assert second.metrics["steps"] == 3


def test_resume_from_a_checkpoint_without_todays_stateful_callbacks(tmp_path, tiny_model_dir):
    """A checkpoint from an older model-garden (no TrainClock state in it) resumes and saves again."""
    data = _dataset(tmp_path, 6)
    common = dict(batch_size=2, max_steps=4, optim="adamw_torch", lr=1e-3, save_steps=1)
    first = train(_cfg(tiny_model_dir, data, tmp_path / "run", **common), callbacks=[InterruptAt(1)])
    stopped = first.metrics["interrupted_at_step"]
    state_file = tmp_path / f"run/checkpoints/checkpoint-{stopped}/trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["stateful_callbacks"]["TrainClock"]
    state_file.write_text(json.dumps(state))
    second = train(_cfg(tiny_model_dir, data, tmp_path / "run", resume="latest", **common))
    assert second.metrics["steps"] == 4
    saved = json.loads((tmp_path / "run/checkpoints/checkpoint-4/trainer_state.json").read_text())
    assert saved["stateful_callbacks"]["TrainClock"]["attributes"]["seconds"] > 0


def test_resume_checks_a_run_folder_against_the_fingerprint_version_it_stored(tmp_path, tiny_model_dir):
    """A run folder from before fingerprints were byte hashes (a bare version-1 digest in
    mask_stats.json) resumes when its data is unchanged, and is refused when it is not."""
    from transformers import AutoTokenizer

    from model_garden.options import ConfigError
    from model_garden.training.run import masked_train_data

    data = _dataset(tmp_path, 6)
    common = dict(batch_size=2, max_steps=4, save_steps=1)
    first = train(_cfg(tiny_model_dir, data, tmp_path / "run", **common), callbacks=[InterruptAt(1)])
    stats_path = tmp_path / "run/mask_stats.json"
    stats = json.loads(stats_path.read_text())
    assert stats["mask_fingerprint"].startswith("v2-") and len(stats["mask_fingerprint"]) == 67
    cfg = _cfg(tiny_model_dir, data, tmp_path / "run", resume="latest", **common)
    v1 = masked_train_data(cfg, AutoTokenizer.from_pretrained(tiny_model_dir)).fingerprint(1)
    assert len(v1) == 64 and v1 != stats["mask_fingerprint"][3:]
    stats_path.write_text(json.dumps({**stats, "mask_fingerprint": "0" * 64}))
    with pytest.raises(ConfigError, match=r"training data \(mask fingerprint\): '000000000000' then, '" + v1[:12]):
        train(cfg)
    stats_path.write_text(json.dumps({**stats, "mask_fingerprint": v1}))
    assert first.interrupted and train(cfg).metrics["steps"] == 4


def test_default_strategy_trains_json_and_prose_replies(tmp_path, tiny_model_dir):
    """The default (auto) trains any data: keys at weight 0.1 in JSON replies, a prose reply whole."""
    data = _dataset(tmp_path, 2)
    prose = _example_lines(1)[0]
    prose["messages"][-1]["content"] = "The registration is AB-123-CD."
    with data.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(prose) + "\n")
    result = train(_cfg(tiny_model_dir, data, tmp_path / "run", mask_strategy="auto", structural_weight=0.0))
    assert result.metrics["steps"] == 1
    stats = json.loads((tmp_path / "run/mask_stats.json").read_text())
    assert stats["examples"] == 3 and stats["json_fallbacks"] == 1
    assert stats["weighted"].get("key", 0) > 0 and "Mask strategy `auto` (moderate, structural weight 0.1" in (tmp_path / "run/README.md").read_text()


def test_weight_policy_keep_prob_and_schedule(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from model_garden.training.collate import StructuredOutputDataCollator
    from model_garden.training.trainer import SelectiveLossSFTTrainer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = _example_lines(2)
    built = [build_example(tok, r["messages"], MaskConfig("aggressive")) for r in rows]
    batch = StructuredOutputDataCollator(processing=tok)(built)
    structural = (batch["token_classes"] > 0) & (batch["token_classes"] < 10) & (batch["labels"] == -100)
    assert structural.sum() > 20

    data = _dataset(tmp_path, 2)
    cfg = _cfg(tiny_model_dir, data, tmp_path / "x", structural_keep_prob=0.5)
    from model_garden.models import load_model

    trainer = SelectiveLossSFTTrainer(model=load_model(str(tiny_model_dir)), args=__import__("transformers").TrainingArguments(str(tmp_path / "o"), seed=3, report_to=[], use_cpu=True), structural_keep_prob=0.5)
    kept = trainer.apply_weight_policy({k: v.clone() for k, v in batch.items()}, 0)
    newly = (kept["labels"] != -100) & structural
    frac = newly.sum().item() / structural.sum().item()
    assert 0.3 < frac < 0.7
    assert torch.equal(kept["labels"][newly], batch["input_ids"][newly])
    again = trainer.apply_weight_policy({k: v.clone() for k, v in batch.items()}, 0)
    assert torch.equal(again["labels"], kept["labels"])  # same seed, step and micro-step: same draw
    other = trainer.apply_weight_policy({k: v.clone() for k, v in batch.items()}, 1)
    assert not torch.equal(other["labels"], kept["labels"])

    trainer.structural_keep_prob = 0.0
    trainer.structural_schedule = (1.0, 0.0)
    trainer.state.max_steps, trainer.state.global_step = 10, 0
    start = trainer.apply_weight_policy({k: v.clone() for k, v in batch.items()}, 0)
    assert torch.all(start["loss_weights"][structural] == 1.0) and torch.all(start["labels"][structural] != -100)
    trainer.state.global_step = 5
    mid = trainer.apply_weight_policy({k: v.clone() for k, v in batch.items()}, 0)
    assert torch.allclose(mid["loss_weights"][structural], torch.tensor(0.5))
    trainer.state.global_step = 10
    end = trainer.apply_weight_policy({k: v.clone() for k, v in batch.items()}, 0)
    assert torch.all(end["labels"][structural] == -100) and torch.all(end["loss_weights"][structural] == 0)
    assert torch.equal(end["labels"][~structural], batch["labels"][~structural])
    assert cfg.mask.structural_keep_prob == 0.5


def test_config_yaml_flags_and_saved_config(tmp_path):
    yml = tmp_path / "c.yaml"
    yml.write_text("dataset: a.jsonl\nlr: 0.001\nbatch-size: 8\nmask_strategy: moderate\n")
    cfg = load_config(yml, {"lr": 0.5, "batch_size": None})
    assert (cfg.optim.lr, cfg.optim.batch_size, cfg.mask.mask_strategy, cfg.data.dataset) == (0.5, 8, "moderate", "a.jsonl")
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1\n")
    with pytest.raises(ValueError, match=r"bad.yaml line 1: unknown option 'learning_rate'"):
        load_config(bad, {})
    with pytest.raises(ValueError, match="--batch-size"):
        load_config(None, {"batch_size": 0})
    with pytest.raises(ValueError, match="--structural-weight-schedule"):
        load_config(None, {"structural_weight_schedule": "cosine"})
    assert load_config(None, {"use_selective_loss": True, "semantic_patterns": ['"x": "([^"]*)"']}).mask.mask_strategy == "custom"
    default = load_config(None, {}).mask
    assert default.mask_strategy == "auto" and default.describe().startswith("auto (moderate, structural weight 0.1")
    assert load_config(None, {"mask_strategy": "moderate", "structural_weight": 0.3}).mask.describe() == "moderate, structural weight 0.3"
    with pytest.raises(ValueError, match="--structural-keep-prob needs a named --mask-strategy"):
        load_config(None, {"structural_keep_prob": 0.3})
    with pytest.raises(ValueError, match="must be one of auto, none, "):
        load_config(None, {"mask_strategy": "bogus"})


def test_train_writes_outputs_and_refuses_bad_data(tmp_path, tiny_model_dir):
    data = _dataset(tmp_path, 3)
    with data.open("a") as fh:
        fh.write("{not json\n")
        fh.write(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(Exception, match=r"data.jsonl:4: not JSON") as err:
        train(_cfg(tiny_model_dir, data, tmp_path / "refused"))
    assert "data.jsonl:5: no assistant message" in str(err.value)
    assert not (tmp_path / "refused/model.safetensors").exists()
    result = train(_cfg(tiny_model_dir, data, tmp_path / "ok", skip_bad_lines=True, max_steps=2, full_finetune=False, merge=True))
    out = result.output
    for name in ("config.yaml", "mask_stats.json", "metrics.json", "log.jsonl", "adapter_model.safetensors", "tokenizer.json", "merged/model.safetensors"):
        assert (out / name).exists(), name
    stats = json.loads((out / "mask_stats.json").read_text())
    assert len(stats["skipped"]) == 2 and stats["examples"] == 3
    assert "structural_weight: 0.3" in (out / "config.yaml").read_text()


def test_padding_is_masked_by_position_not_by_id(smollm2_tokenizer):
    """SmolLM2 pads with its end-of-turn token; the reply's own <|im_end|> stays trained."""
    from model_garden.training.collate import StructuredOutputDataCollator

    tok = smollm2_tokenizer
    assert tok.pad_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    short = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": '{"a": 1}'}]
    long = [{"role": "user", "content": "Hello there, a longer prompt"}, {"role": "assistant", "content": '{"a": 22}'}]
    batch = StructuredOutputDataCollator(processing=tok)([build_example(tok, short), build_example(tok, long)])
    n = int(batch["attention_mask"][0].sum())
    assert n < batch["input_ids"].shape[1]
    assert batch["labels"][0, n - 2].item() == tok.pad_token_id  # the reply's <|im_end|>, trained
    assert torch.all(batch["input_ids"][0, n:] == tok.pad_token_id)  # padding: same id ...
    assert torch.all(batch["labels"][0, n:] == -100) and torch.all(batch["loss_weights"][0, n:] == 0)  # ... never trained


def test_examples_with_nothing_to_train_are_dropped(smollm2_tokenizer):
    from model_garden.training.collate import StructuredOutputDataCollator

    tok = smollm2_tokenizer
    chat = [{"role": "user", "content": "word " * 50}, {"role": "assistant", "content": '{"a": 1}'}]
    cut = build_example(tok, chat, max_length=20)
    assert cut["truncated"] and all(label == -100 for label in cut["labels"])
    collator = StructuredOutputDataCollator(processing=tok)
    batch = collator([cut, build_example(tok, chat)])
    assert batch["input_ids"].shape[0] == 1 and collator.dropped == 1
