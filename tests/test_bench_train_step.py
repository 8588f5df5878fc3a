"""benchmarks/bench_train_step.py --vs-trl: model-garden's trainer and TRL's SFTTrainer side
by side on a tiny model, each in its own child process."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from model_garden.masking import build_example
from model_garden.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_train_step", REPO / "benchmarks/bench_train_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _chats(n: int) -> list[dict]:
    rows = [json.loads(line) for line in (REPO / "model_garden/assets/example.jsonl").read_text(encoding="utf-8").splitlines()]
    out = []
    for i in range(n):
        row = json.loads(json.dumps(rows[i % len(rows)]))
        row["messages"][1]["content"] += " x" * (5 * i)  # prompts of different lengths: padding inside a batch
        out.append(row)
    return out


def test_options_defaults_depend_on_the_mode():
    bench = _bench()
    assert bench.options([]).steps == 6
    side = bench.options(["--vs-trl"])
    assert (side.steps, side.warmup, side.model, side.gradient_checkpointing) == (20, 2, "smollm2-135m", True)
    assert Path(side.data).is_absolute()


def test_trl_records_are_conversational_prompt_completion(tmp_path):
    data = tmp_path / "data.jsonl"
    chat = _chats(1)[0]
    data.write_text(json.dumps(chat) + "\n" + json.dumps({"prompt": "2+2=", "completion": "4"}) + "\n", encoding="utf-8")
    first, second = _bench()._trl_records(str(data))
    assert first["prompt"] == chat["messages"][:-1] and first["completion"] == chat["messages"][-1:]
    assert second == {"prompt": "2+2=", "completion": "4"}


@pytest.mark.slow
def test_vs_trl_trains_both_and_counts_the_tokens_the_data_holds(tmp_path, tiny_model_dir, smollm2_tokenizer):
    from trl.data_utils import _tokenize

    bench = _bench()
    chats = _chats(6)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in chats), encoding="utf-8")
    # 1 warm-up + 2 timed steps of batch 2: exactly one pass over the 6 examples, whatever the order.
    o = bench.options(["--vs-trl", "--model", str(tiny_model_dir), "--data", str(data), "--steps", "2", "--warmup", "1",
                       "--batch", "2", "--max-length", "1024", "--threads", "1"])
    report = bench.vs_trl(o)

    tok = smollm2_tokenizer
    lengths = [len(_tokenize(tok, c["messages"])["input_ids"]) for c in chats]
    trl_loss = [n - len(_tokenize(tok, c["messages"][:-1], add_generation_prompt=True)["input_ids"]) for n, c in zip(lengths, chats)]
    ours_loss = [sum(label != -100 for label in build_example(tok, c["messages"], TrainConfig().mask_config())["labels"][1:]) for c in chats]
    expected_loss = {"model-garden": sum(ours_loss), "trl": sum(trl_loss)}
    for which in ("model-garden", "trl"):
        r = report[which]
        assert r["tokens_per_s"] > 0 and r["step_time_median_s"] > 0 and len(r["step_times_s"]) == 2
        assert r["peak_rss_mb"] > 0 and r["rss_after_load_mb"] > 0 and r["peak_over_load_mb"] > 0
        # Non-padding tokens: every example once, as tokenized by the chat template; the
        # trainer's own counter agrees; the timed steps hold 4 of the 6 examples.
        assert len(r["step_tokens"]) == 3 and sum(r["step_tokens"]) == sum(lengths) == r["trainer_tokens_seen"]
        assert r["timed_tokens"] == sum(r["step_tokens"][1:]) and r["timed_examples"] == 4
        assert r["timed_padded_tokens"] >= r["timed_tokens"]
        assert r["tokens_per_s"] == pytest.approx(r["timed_tokens"] / sum(r["step_times_s"]))
        assert sum(r["step_loss_tokens"]) == expected_loss[which]
        assert r["threads"] == 1 and r["gradient_checkpointing"] is True
    # The same adapter on both sides.
    assert report["model-garden"]["trainable_params"] == report["trl"]["trainable_params"] > 0
    assert all(v > 0 for v in report["ratio_ours_over_trl"].values())
    assert report["setup"]["group_by_length"] == {"model-garden": True, "trl": False}
