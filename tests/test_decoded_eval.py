"""Decoded evaluation during training: the logged JSON validity and field accuracy are what
``predict`` + ``evaluate`` of the same checkpoint give, and ``--metric-for-best`` keeps
the best checkpoint.

Run: ``.venv/bin/python -m pytest tests/test_decoded_eval.py -q``
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_garden.evaluation.decoded import decoded_eval_factory
from model_garden.evaluation.report import evaluate_files
from model_garden.inference.predict import predict
from model_garden.training.config import TrainConfig
from model_garden.training.run import train

SCHEMA = {
    "type": "object",
    "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}, "count": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["colour", "count"],
    "additionalProperties": False,
}


def _data(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    rows = []
    for i in range(n):
        colour, count = ["red", "green", "blue"][i % 3], i % 10
        answer = json.dumps({"colour": colour, "count": count})
        rows.append({"messages": [{"role": "user", "content": f"{count} {colour} balls. JSON?"}, {"role": "assistant", "content": answer}]})
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.integration
def test_logged_decoded_metrics_equal_predict_and_evaluate_of_the_checkpoint(tmp_path, tiny_model_dir):
    train_data, eval_data = _data(tmp_path / "train", 8), _data(tmp_path / "eval", 5)
    cfg = TrainConfig.from_options(
        base_model=str(tiny_model_dir), dataset=str(train_data), eval_dataset=str(eval_data), output=str(tmp_path / "run"),
        full_finetune=True, bf16="false", optim="sgd", lr=0.5, max_steps=4, batch_size=4, report_to="none",
        logging_steps=1, eval_steps=2, save_steps=2, save_total_limit=5, eval_generate=4, metric_for_best="field_accuracy",
    )
    result = train(cfg, decoded_eval_factory=decoded_eval_factory)
    decoded = dict((step, m) for step, m in result.metrics["decoded_eval"])
    assert sorted(decoded) == [0, 2, 4]
    assert all(m["json_valid"] == 1.0 for m in decoded.values())  # the grammar guarantees it
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "eval_field_accuracy" in r] == [0, 2, 4]
    for step in (2, 4):
        preds = tmp_path / f"preds-{step}.jsonl"
        predict(tmp_path / "run" / "checkpoints" / f"checkpoint-{step}", eval_data, preds, limit=4, max_new_tokens=64)
        report = evaluate_files(preds, eval_data, predicted_only=True)
        assert report["metrics"]["field_accuracy"] == pytest.approx(decoded[step]["field_accuracy"])
        assert report["metrics"]["json_valid"] == pytest.approx(decoded[step]["json_valid"])
        assert report["metrics"]["field_accuracy_filled"] == pytest.approx(decoded[step]["field_accuracy_filled"])
    best = max((2, 4), key=lambda s: (decoded[s]["field_accuracy"], -s))
    assert result.metrics["best_checkpoint"].endswith(f"checkpoint-{best}")


def test_best_and_early_stopping_options_are_checked():
    with pytest.raises(ValueError, match="--metric-for-best needs --save-steps to be a multiple of --eval-steps"):
        TrainConfig.from_options(metric_for_best="field_accuracy", eval_steps=3, save_steps=10)
    with pytest.raises(ValueError, match="--early-stopping-patience needs --metric-for-best"):
        TrainConfig.from_options(early_stopping_patience=2)
    with pytest.raises(ValueError, match="--metric-for-best must be one of"):
        TrainConfig.from_options(metric_for_best="accuracy")


def test_grounded_decoded_evaluation_is_what_predict_grounded_gives(tmp_path, tiny_model_dir):
    from model_garden.data.sources import open_source
    from model_garden.evaluation.decoded import DecodedEval
    from model_garden.masking.codec import ChatCodec
    from model_garden.models import load_model, load_processing

    schema = {"type": "object", "properties": {"name": {"type": "string"}, "city": {"type": ["string", "null"]}},
              "required": ["name", "city"], "additionalProperties": False}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    rows = [{"source": f"NAME: {n}\nCITY: {c}", "messages": [{"role": "user", "content": "Read the card. JSON?"},
                                                              {"role": "assistant", "content": json.dumps({"name": n, "city": c})}]}
            for n, c in (("ADA", "PARIS"), ("BOB", "LYON"))]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    processing = load_processing(str(tiny_model_dir))
    decoded = DecodedEval(ChatCodec.for_data(processing, data), open_source(data), 2, 48, grounded=True)
    assert all(isinstance(c, str) and '"substring_chunks"' in c for c in decoded.constraints)
    metrics = decoded(load_model(str(tiny_model_dir)))
    predict(tiny_model_dir, data, tmp_path / "preds.jsonl", max_new_tokens=48, grounded=True)
    report = evaluate_files(tmp_path / "preds.jsonl", data)
    assert decoded.outputs == [json.loads(line)["output"] for line in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert metrics["field_accuracy"] == pytest.approx(report["metrics"]["field_accuracy"])
    assert report["source_check"]["values_outside"] == 0
