"""``model-garden evaluate-vtg``: predictions JSONL against annotation files.

Run: ``.venv/bin/python -m pytest tests/test_vtg_evaluate.py -q``
"""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from model_garden.cli import app


def _write(path, lines):
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


@pytest.fixture
def small(tmp_path):
    ann = tmp_path / "ann.txt"
    ann.write_text(
        "AAA 0.0 10.0##one.\n"
        "AAA 8.0 7.0##reversed, dropped.\n"
        "AAA 5.0 15.0##two.\n"
        "BBB 0.0 10.0##three.\n"
        "BBB 2.0 6.0##four.\n",
        encoding="utf-8",
    )
    durations = tmp_path / "d.csv"
    durations.write_text("id,length\nAAA,20.0\nBBB,20.0\n", encoding="utf-8")
    return ann, durations


def test_evaluate_vtg_scores_and_writes_the_report(small, tmp_path):
    ann, durations = small
    preds = _write(
        tmp_path / "preds.jsonl",
        [
            {"index": 0, "output": "[0.0, 10.0]"},  # IoU 1
            {"index": 1, "output": "The event happens in the 0 - 10 seconds."},  # 5 / 15
            {"index": 2, "output": "<|box_start|><2><11><|box_end|>"},  # 20 bins of 1 s: 2.5-11.5 s vs 0-10: 7.5 / 11.5
        ],  # index 3 missing
    )
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app, ["evaluate-vtg", "--predictions", str(preds), "--annotations", str(ann), "--durations", str(durations), "--num-bins", "20", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "R1@0.5" in result.output and "mIoU" in result.output
    assert "no prediction, scored IoU 0: 1 rows (indices 3)" in result.output
    assert "1 annotation rows with start >= end were left out" in result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    metrics = report["metrics"]
    assert metrics["n"] == 4 and metrics["n_unparsed"] == 1
    assert metrics["r1@0.3"] == 75.0 and metrics["r1@0.5"] == 50.0 and metrics["r1@0.7"] == 25.0
    assert metrics["miou"] == pytest.approx(100 * (1 + 5 / 15 + 7.5 / 11.5) / 4)
    assert report["missing_predictions"] == [3] and report["unparsed"] == []
    assert report["examples"][2]["prediction"] == pytest.approx([2.5, 11.5])
    assert report["examples"][1] | {"iou": 0} == {
        "index": 1, "video_id": "AAA", "query": "two.", "gold": [5.0, 15.0], "prediction": [0.0, 10.0], "iou": 0,
        "output": "The event happens in the 0 - 10 seconds.",
    }


def test_evaluate_vtg_on_charades_test_with_gold_answers(shared_dir, tmp_path):
    root = shared_dir / "data" / "charades_sta"
    lines = (root / "charades_sta_test.txt").read_text(encoding="utf-8").splitlines()
    answers = [f"[{ln.split()[1]}, {ln.split()[2].split('##')[0]}]" for ln in lines]
    answers[:372] = ["no idea"] * 372  # 10% unparsed
    preds = _write(tmp_path / "p.jsonl", [{"output": a} for a in answers])  # no "index": line order
    result = CliRunner().invoke(
        app, ["evaluate-vtg", "--predictions", str(preds), "--annotations", str(root / "charades_sta_test.txt"),
              "--durations", str(root / "durations_test.csv")]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "p.report.json").read_text(encoding="utf-8"))["metrics"]
    assert metrics == {"r1@0.3": 90.0, "r1@0.5": 90.0, "r1@0.7": 90.0, "miou": pytest.approx(90.0), "n": 3720, "n_unparsed": 372}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"index": 0, "output": "[0, 1]"}', "not json"], r"p.jsonl:2: not a JSON line"),
        (['{"index": "0", "output": "[0, 1]"}'], r"p.jsonl:1: expected \{\"index\""),
        (['{"index": 0, "output": "[0, 1]"}', '{"index": 0, "output": "[0, 2]"}'], r"p.jsonl:2: a second prediction for index 0"),
        (['{"index": 9, "output": "[0, 1]"}'], r"p.jsonl:1: index 9 is past the 4 annotation rows"),
        (['{"index": 0, "output": "<3><5>"}'], r"p.jsonl:1: .*temporal tokens.*--durations"),
    ],
)
def test_evaluate_vtg_bad_predictions_name_the_line(small, tmp_path, lines, message):
    ann, _ = small
    preds = tmp_path / "p.jsonl"
    preds.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["evaluate-vtg", "--predictions", str(preds), "--annotations", str(ann)])
    assert result.exit_code == 2
    assert re.search(message, " ".join(result.output.split()))
