"""compare: identical starts per seed, paired differences, resumable, a report with plots;
and the demo wired end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from model_garden.experiments.compare import CompareConfig, compare
from model_garden.experiments.report import markdown
from model_garden.experiments.stats import interval
from model_garden.experiments.summary import summarize
from model_garden.models import load_processing
from model_garden.training.config import TrainConfig
from model_garden.training.run import masked_train_data

EXAMPLE = Path(__file__).resolve().parents[1] / "model_garden/assets/example.jsonl"


def test_interval_is_a_student_t_interval():
    m, half = interval([1.0, 3.0])
    assert m == 2.0 and half == pytest.approx(12.7062047, rel=1e-6)  # t(0.975, 1) * sd / sqrt(2)
    assert interval([5.0]) == (5.0, None)
    assert interval([None, float("nan")]) == (None, None)


def test_summary_pairs_seeds_and_counts_steps_to_target():
    def run(strategy, seed, curve, acc):
        return {"strategy": strategy, "seed": seed, "train": {"eval_value_loss": curve}, "eval": {"constrained": {"field_accuracy": acc}}}

    runs = [
        run("none", 0, [[0, 1.0], [10, 0.5], [20, 0.4]], 0.50),
        run("none", 1, [[0, 1.0], [10, 0.6], [20, 0.3]], 0.60),
        run("x", 0, [[0, 1.0], [10, 0.4], [20, 0.35]], 0.55),
        run("x", 1, [[0, 1.0], [10, 0.5], [20, 0.45]], 0.62),
    ]
    table = summarize(runs, ["none", "x"])["table"]
    assert table["none"]["steps_to_target"]["mean"] == 20
    # seed 0 reaches the baseline's best (0.4) at step 10; seed 1 never reaches 0.3
    assert table["x"]["steps_to_target"]["mean"] == 10 and table["x"]["steps_to_target"]["n"] == 1
    diff = table["x"]["constrained/field_accuracy"]
    assert diff["diff"] == pytest.approx(((0.55 - 0.50) + (0.62 - 0.60)) / 2)
    assert table["none"]["constrained/field_accuracy"]["diff"] is None
    # A strategy with fewer seeds: its cells have no interval, its header says so.
    uneven = summarize(runs[:3], ["none", "x"])
    assert uneven["table"]["x"]["constrained/field_accuracy"]["diff"] == pytest.approx(0.05)
    assert uneven["table"]["x"]["constrained/field_accuracy"]["paired"]["low"] is None  # one paired seed: no interval
    assert "| metric | none (2 seeds) | x (1 seed) |" in markdown(uneven)


def test_plots_stay_readable_at_many_fields(tmp_path):
    """The per-field chart grows in height, not width, with the fields; the legend sits
    above the bars; nothing is clipped (saved with a tight bounding box)."""
    import matplotlib.image

    from model_garden.experiments.plots import field_accuracy

    def chart(n_fields: int, strategies: list[str]) -> tuple[int, int]:
        fields = {f"section{i}.field_with_a_long_name_{i}.contents": (i % 10) / 10 for i in range(n_fields)}
        summary = {"strategies": strategies, "per_field": {s: {"constrained": fields} for s in strategies}}
        height, width = matplotlib.image.imread(field_accuracy(summary, "constrained", tmp_path / "f.png")).shape[:2]
        return width, height

    five = ["none", "conservative", "moderate", "aggressive", "schema-forced"]
    small, large = chart(4, ["none", "moderate"]), chart(60, five)
    assert small[0] < 1100 and large[0] < 1100  # was 0.6 in per bar: 2,904 px wide for 44 bars
    assert large[1] > 5 * small[1]


@pytest.mark.integration
def test_compare_runs_reports_and_resumes(tmp_path, tiny_model_dir):
    model_dir = tiny_model_dir
    train = TrainConfig.from_options(
        base_model=str(model_dir), dataset=str(EXAMPLE), eval_dataset=str(EXAMPLE), max_steps=2, batch_size=2,
        eval_steps=1, logging_steps=1, report_to="none", bf16="false",
    )
    cfg = CompareConfig(
        train=train, strategies=["none", "aggressive"], seeds=[0, 1], out=str(tmp_path / "cmp"),
        decodings=["constrained", "free"], predict_limit=2, max_new_tokens=8,
    )
    summary = compare(cfg)
    out = tmp_path / "cmp"
    for name in ("report.md", "summary.json", "loss_curves.png", "field_accuracy.png"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert f"- training data: `{EXAMPLE}`; eval data: `{EXAMPLE}`" in report
    assert f"- base model: `{model_dir}`; LoRA r=16; lr 0.0005; batch 2 x accumulation 1; 2 steps" in report
    assert "evaluation every 1 steps (decoding " in report and "final decoding: 2 examples, max new tokens 8" in report
    assert "| metric | none | aggressive |" in report and "constrained: JSON valid" in report and "free: field accuracy" in report
    runs = summary["runs"]
    assert set(runs) == {"none-seed0", "aggressive-seed0", "none-seed1", "aggressive-seed1"}
    # Same seed, same start: both strategies begin from the same value loss.
    curves = summary["eval_curves"]
    for seed in (0, 1):
        assert curves["none"][seed][0] == curves["aggressive"][seed][0]
        assert curves["none"][seed][0][0] == 0
    evaluated = json.loads((out / "runs/none-seed0/eval-constrained.json").read_text())
    assert evaluated["metrics"]["n"] == 2 and evaluated["predicted_only"]
    assert evaluated["records"]["line"] == [1, 2] and len(evaluated["records"]["json_valid"]) == 2
    # Paired on records: every decoded metric has a bootstrap difference, every field a McNemar test
    cell = summary["table"]["aggressive"]["constrained/field_accuracy"]
    assert cell["paired"]["method"] == "hierarchical bootstrap" and (cell["paired"]["seeds"], cell["paired"]["records"]) == (2, 2)
    assert cell["verdict"].startswith(("resolved", "not resolved", "no difference"))
    fields = evaluated["records"]["fields"]
    assert set(summary["mcnemar"]["aggressive"]["constrained"]) == set(fields)
    assert all(t["pairs"] == 4 for t in summary["mcnemar"]["aggressive"]["free"].values())
    assert "## Paired differences" in report and "### `aggressive` against `none`" in report
    # Every wrong field has a kind, and the report counts them per run
    wrong = sum(v == 0 for column in fields.values() for v in column["correct"])
    assert sum(evaluated["errors"]["counts"].values()) == wrong and "## Wrong fields by kind" in report
    # A second call reuses what is done.
    stamp = (out / "runs/none-seed0/metrics.json").stat().st_mtime_ns
    compare(cfg)
    assert (out / "runs/none-seed0/metrics.json").stat().st_mtime_ns == stamp
    # An evaluation report from before per-record outcomes is re-scored from its
    # predictions (no decoding), keeping the decoding statistics.
    old = {k: v for k, v in evaluated.items() if k != "records"}
    (out / "runs/none-seed0/eval-constrained.json").write_text(json.dumps(old))
    compare(cfg)
    rescored = json.loads((out / "runs/none-seed0/eval-constrained.json").read_text())
    assert rescored["records"] == evaluated["records"] and rescored["predict"] == evaluated["predict"]
    # One from before error kinds: sorted from its predictions for the summary, the file left as it is.
    (out / "runs/none-seed0/eval-constrained.json").write_text(json.dumps({k: v for k, v in evaluated.items() if k != "errors"}))
    again = compare(cfg)
    assert again["errors"]["none"]["constrained"] == summary["errors"]["none"]["constrained"]
    assert "errors" not in json.loads((out / "runs/none-seed0/eval-constrained.json").read_text())
    # Report only: seed 2 was never run, so it is listed, not trained.
    partial = compare(dataclasses.replace(cfg, seeds=[0, 1, 2], report_only=True))
    assert partial["missing"] == ["none-seed2", "aggressive-seed2"] and not (out / "runs/none-seed2").exists()
    assert set(partial["runs"]) == set(runs) and partial["table"]["none"]["train_runtime_s"]["n"] == 2
    assert "Not run (so left out of every mean): none-seed2, aggressive-seed2." in (out / "report.md").read_text()
    # Records drawn by cluster (here by the gold's make): the same differences, resampled by make.
    by_make = compare(dataclasses.replace(cfg, report_only=True, cluster_by="/Marque"))
    clustered = by_make["table"]["aggressive"]["constrained/field_accuracy"]
    assert clustered["diff"] == cell["diff"] and clustered["paired"]["method"] == "hierarchical bootstrap over 2 clusters"
    assert "`--cluster-by /Marque`, 2 clusters" in (out / "report.md").read_text()
    # A finished run whose masks this version no longer builds (the mask code changed) is refused.
    stats_path = out / "runs/aggressive-seed1/mask_stats.json"
    stats = json.loads(stats_path.read_text())
    stats_path.write_text(json.dumps({**stats, "mask_fingerprint": "0" * 64}))
    with pytest.raises(ValueError, match=r"aggressive-seed1: trained on other masks .* 000000000000, now .* new --out"):
        compare(dataclasses.replace(cfg, report_only=True))
    # One that stored its fingerprint in the older version (a bare digest) is checked in that version.
    v1 = masked_train_data(cfg.run_config("aggressive", 1), load_processing(cfg.train.model.base_model)).fingerprint(1)
    stats_path.write_text(json.dumps({**stats, "mask_fingerprint": v1}))
    assert compare(dataclasses.replace(cfg, report_only=True))["missing"] == []


@pytest.mark.integration
def test_grounded_decoding_and_a_calibration_split(tmp_path, tiny_model_dir):
    """--decodings constrained,grounded with --calibration-dataset: each decoding fits its
    own calibration map on the calibration split and the eval report measures it."""
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "city": {"type": ["string", "null"]}},
              "required": ["name", "city"], "additionalProperties": False}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    rows = [{"source": f"NAME: {n}\nCITY: {c}", "messages": [{"role": "user", "content": "Read the card. JSON?"},
                                                               {"role": "assistant", "content": json.dumps({"name": n, "city": c})}]}
            for n, c in (("ADA", "PARIS"), ("BOB", "LYON"), ("CY", "NICE"), ("DI", "METZ"))]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train = TrainConfig.from_options(
        base_model=str(tiny_model_dir), dataset=str(data), eval_dataset=str(data), max_steps=1, batch_size=2,
        eval_steps=1, logging_steps=1, report_to="none", bf16="false", eval_generate=0,
    )
    cfg = CompareConfig(
        train=train, strategies=["none"], seeds=[0], out=str(tmp_path / "cmp"), decodings=["constrained", "grounded"],
        calibration_dataset=str(data), test_dataset=str(data), max_new_tokens=24,
    )
    summary = compare(cfg)
    run = tmp_path / "cmp/runs/none-seed0"
    for decoding in ("constrained", "grounded"):
        assert (run / f"calibration-{decoding}.json").is_file() and (run / f"preds-calibration-{decoding}.jsonl").is_file()
        evaluated = json.loads((run / f"eval-{decoding}.json").read_text())
        assert evaluated["confidence"]["calibration"]["dataset"] == str(data)
        assert set(evaluated["confidence"]["at"]) == {"0.95", "0.99"}
        meta = json.loads((run / f"preds-{decoding}.jsonl.meta.json").read_text())
        assert meta["calibration"] == str(run / f"calibration-{decoding}.json") and meta["grounded"] is (decoding == "grounded")
        assert evaluated["source_check"]["records"] == 4
        if decoding == "grounded":
            assert evaluated["source_check"]["values_outside"] == 0
    assert {"grounded/field_accuracy", "grounded/outside_source_rate", "constrained/review_coverage_99"} <= set(summary["table"]["none"])
    report = (tmp_path / "cmp/report.md").read_text()
    assert "grounded: string values not in the source" in report
    assert f"judged on `{data}`; confidence calibrated on `{data}`" in report


@pytest.mark.integration
def test_strategies_with_equal_masks_share_one_run(tmp_path, tiny_model_dir):
    """On the bundled forms, moderate and aggressive train exactly the same tokens (every
    key token carries a quote or a colon, no free-standing punctuation): one run serves both."""
    train = TrainConfig.from_options(
        base_model=str(tiny_model_dir), dataset=str(EXAMPLE), eval_dataset=str(EXAMPLE), max_steps=1, batch_size=2,
        eval_steps=1, logging_steps=1, report_to="none", bf16="false",
    )
    cfg = CompareConfig(
        train=train, strategies=["none", "moderate", "aggressive"], seeds=[0], out=str(tmp_path / "cmp"),
        decodings=["constrained"], predict_limit=1, max_new_tokens=4,
    )
    summary = compare(cfg)
    runs = tmp_path / "cmp/runs"
    assert sorted(p.name for p in (runs / "aggressive-seed0").iterdir()) == ["same_as.json"]
    assert json.loads((runs / "aggressive-seed0/same_as.json").read_text())["run"] == "moderate-seed0"
    assert (runs / "moderate-seed0/metrics.json").is_file()  # none's masks differ: moderate trained
    assert summary["shared"] == {"aggressive-seed0": "moderate-seed0"}
    assert summary["runs"]["aggressive-seed0"] == summary["runs"]["moderate-seed0"]
    assert "aggressive-seed0 = moderate-seed0" in (tmp_path / "cmp/report.md").read_text()
    stats = json.loads((runs / "moderate-seed0/mask_stats.json").read_text())
    assert stats["mask_fingerprint"].startswith("v2-") and len(stats["mask_fingerprint"]) == 67
    assert stats["mask_fingerprint"] != json.loads((runs / "none-seed0/mask_stats.json").read_text())["mask_fingerprint"]


def test_compare_refuses_bad_configs():
    train = TrainConfig.from_options(dataset=str(EXAMPLE))
    with pytest.raises(ValueError, match="--eval-dataset"):
        CompareConfig(train=train)
    train = TrainConfig.from_options(dataset=str(EXAMPLE), eval_dataset=str(EXAMPLE))
    with pytest.raises(ValueError, match="--strategies has duplicates"):
        CompareConfig(train=train, strategies=["none", "none"])
    with pytest.raises(ValueError, match="--strategies: .bogus. is not STRATEGY.*one of none"):
        CompareConfig(train=train, strategies=["none", "bogus"])
    with pytest.raises(ValueError, match="--strategies: .moderate@x. is not STRATEGY"):
        CompareConfig(train=train, strategies=["none", "moderate@x"])
    with pytest.raises(ValueError, match="--structural-weight must be in"):
        CompareConfig(train=train, strategies=["none", "moderate@1.5"])


def test_arms_set_structural_weight_or_schedule_per_run():
    """``moderate@0.1`` and ``moderate@linear:1.0->0.0`` are runs of their own, with
    folder names a file system takes; a bare strategy keeps the shared options."""
    train = TrainConfig.from_options(dataset=str(EXAMPLE), eval_dataset=str(EXAMPLE), mask_strategy="none", structural_weight=0.2)
    cfg = CompareConfig(train=train, strategies=["none", "moderate", "moderate@0.1", "moderate@linear:1.0->0.0"], out="o")
    runs = {arm: cfg.run_config(arm, 3) for arm in cfg.strategies}
    assert [(r.mask.mask_strategy, r.mask.structural_weight, r.mask.structural_weight_schedule) for r in runs.values()] == [
        ("none", 0.2, None), ("moderate", 0.2, None), ("moderate", 0.1, None), ("moderate", 0.2, "linear:1.0->0.0"),
    ]
    assert runs["moderate@linear:1.0->0.0"].mask.schedule() == (1.0, 0.0)
    assert [Path(r.run.output).name for r in runs.values()] == [
        "none-seed3", "moderate-seed3", "moderate@0.1-seed3", "moderate@linear1.0to0.0-seed3",
    ]
    longer = CompareConfig(train=train, strategies=["moderate@0.1", "moderate@0.1+3ep", "none+2ep"], out="o")
    runs = {arm: longer.run_config(arm, 0) for arm in longer.strategies}
    assert [(r.mask.mask_strategy, r.mask.structural_weight, r.optim.epochs) for r in runs.values()] == [
        ("moderate", 0.1, 1.0), ("moderate", 0.1, 3), ("none", 0.2, 2),
    ]
    assert Path(runs["moderate@0.1+3ep"].run.output).name == "moderate@0.1+3ep-seed0"
    with pytest.raises(ValueError, match=r"optionally followed by \+Nep"):
        CompareConfig(train=train, strategies=["none+0ep"], out="o")


@pytest.mark.integration
def test_arms_that_differ_only_in_epochs_do_not_share_a_run(tmp_path, tiny_model_dir):
    train = TrainConfig.from_options(
        base_model=str(tiny_model_dir), dataset=str(EXAMPLE), eval_dataset=str(EXAMPLE), batch_size=4,
        eval_steps=1, logging_steps=1, report_to="none", bf16="false", eval_generate=0,
    )
    cfg = CompareConfig(train=train, strategies=["none", "none+2ep"], seeds=[0], out=str(tmp_path / "cmp"),
                        decodings=["constrained"], predict_limit=1, max_new_tokens=4)
    summary = compare(cfg)
    assert summary["shared"] == {}
    steps = {arm: json.loads((tmp_path / f"cmp/runs/{arm}-seed0/metrics.json").read_text())["steps"] for arm in ("none", "none+2ep")}
    assert steps["none+2ep"] == 2 * steps["none"]


@pytest.mark.integration
def test_demo_end_to_end_small(tmp_path, tiny_model_dir):
    """The demo's wiring (forms -> compare -> constrained and grounded decoding -> report)
    on a tiny model; the README's first command runs the real thing."""
    from model_garden.experiments.demo import DemoConfig, demo

    cfg = DemoConfig(out=str(tmp_path / "demo"), forms=20, max_steps=2, batch_size=2, eval_examples=2, base_model=str(tiny_model_dir))
    summary = demo(cfg)
    assert summary["strategies"] == ["none", "moderate@0.1"] and summary["decodings"] == ["constrained", "grounded"]
    assert (tmp_path / "demo/compare/report.md").is_file()
    # the review page of the selective arm's grounded predictions: the 2 decoded forms
    page = (tmp_path / "demo/review.html").read_text()
    assert page.count('<section class="record"') == 2 and "review · preds-grounded.jsonl" in page
    preds = (tmp_path / "demo/compare/runs/moderate@0.1-seed0/preds-constrained.jsonl").read_text().splitlines()
    assert len(preds) == 2 and all(json.loads(p)["constrained"] for p in preds)
    grounded = (tmp_path / "demo/compare/runs/moderate@0.1-seed0/preds-grounded.jsonl").read_text().splitlines()
    assert len(grounded) == 2 and all(json.loads(p)["grounded"] and "confidence" in json.loads(p) for p in grounded)
    # The grammar carries the schema: the demo's prompts leave it out (half the tokens).
    record = json.loads((tmp_path / "demo/forms/text/train.jsonl").read_text().splitlines()[0])
    assert '"properties"' not in record["messages"][1]["content"] and record["source"] in record["messages"][1]["content"]
    assert 0.0 <= summary["runs"]["moderate@0.1-seed0"]["constrained/json_valid"] <= 1.0
