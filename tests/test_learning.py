"""Proof it learns: the embedded SmolLM2-135M, LoRA, 8 synthetic forms, at most 30 steps;
the value-token loss must fall by at least half."""

from __future__ import annotations

import json

import pytest

from model_garden.data.forms import make_forms
from model_garden.training.config import TrainConfig
from model_garden.training.run import train


@pytest.mark.slow
def test_smollm2_learns_the_values_of_8_forms(tmp_path):
    make_forms(tmp_path / "forms", n=10, seed=0)  # 8 train, 1 val, 1 test
    # The forms' prompts hold their JSON Schema (about 500 tokens); this test is about
    # learning the values, so the schema is left out to halve the CPU time.
    data = tmp_path / "train.jsonl"
    with data.open("w", encoding="utf-8") as out:
        for line in (tmp_path / "forms" / "text" / "train.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            user = row["messages"][1]
            user["content"] = user["content"][user["content"].index("Document:") :]
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    cfg = TrainConfig.from_options(
        dataset=str(data),
        eval_dataset=str(data),  # the training forms: does the model fit what it is shown?
        output=str(tmp_path / "run"),
        mask_strategy="aggressive",  # trained on values only, judged on values only
        max_steps=24,
        batch_size=2,
        lr=1e-3,
        eval_steps=24,
        save_steps=1000,
        logging_steps=4,
        report_to="none",
    )
    result = train(cfg)
    (start_step, start), (end_step, end) = result.metrics["eval_value_loss"][0], result.metrics["eval_value_loss"][-1]
    assert (start_step, end_step) == (0, 24)
    assert end <= start / 2, f"value-token loss went from {start:.3f} to {end:.3f}"
