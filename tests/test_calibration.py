"""Confidence metrics (evaluation.reliability), the isotonic calibration map, its plots, and
``model-garden calibrate``.

Run: ``.venv/bin/python -m pytest tests/test_calibration.py -q -p no:cacheprovider``
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from model_garden.cli import app
from model_garden.evaluation.calibration import confidence_report, field_outcomes, fit_calibration, fit_map
from model_garden.evaluation.calibration_plots import plot_precision_coverage, plot_reliability
from model_garden.evaluation.reliability import (
    auroc,
    coverage_at,
    expected_calibration_error,
    fit_isotonic,
    fields_to_certify,
    precision_coverage,
    precision_lower_bound,
    reliability_bins,
    threshold_for_precision,
)
from model_garden.inference.calibration_map import CALIBRATION_FILE, CalibrationMap

# Five fields: confidences and outcomes (1 = right)
CONF = [0.9, 0.8, 0.8, 0.6, 0.3]
RIGHT = [1, 1, 0, 1, 0]

# ---------------------------------------------------------------- metrics


def test_auroc_hand_computed():
    # right {0.9, 0.8, 0.6} x wrong {0.8, 0.3}: (0.9,0.8) 1, (0.9,0.3) 1, (0.8,0.8) tie 1/2,
    # (0.8,0.3) 1, (0.6,0.8) 0, (0.6,0.3) 1 -> 4.5 of 6 pairs
    assert auroc(CONF, RIGHT) == 0.75
    assert auroc([0.1, 0.2], [1, 0]) == 0.0 and auroc([0.5, 0.5], [1, 0]) == 0.5
    assert auroc([0.9, 0.2], [1, 1]) is None and auroc([0.9], [0]) is None


def test_ece_and_reliability_bins_hand_computed():
    # bin [0.9, 1.0]: {0.9} right -> |0.9 - 1| = 0.1;   bin [0.8, 0.9): {0.8 right, 0.8 wrong} -> |0.8 - 0.5| = 0.3
    # bin [0.6, 0.7): {0.6} right -> 0.4;               bin [0.3, 0.4): {0.3} wrong -> 0.3
    # ECE = (1 * 0.1 + 2 * 0.3 + 1 * 0.4 + 1 * 0.3) / 5 = 0.28
    assert expected_calibration_error(CONF, RIGHT) == pytest.approx(0.28)
    bins = reliability_bins(CONF, RIGHT)
    assert [b["n"] for b in bins] == [0, 0, 0, 1, 0, 0, 1, 0, 2, 1]
    assert bins[8] == {"low": 0.8, "high": 0.9, "n": 2, "confidence": 0.8, "accuracy": 0.5}
    assert bins[0]["confidence"] is None and bins[0]["accuracy"] is None
    # edges: 0.3 opens [0.3, 0.4) (not the bin below, as 3 * 0.1 > 0.3 would put it), 1.0 is in the last bin, 0.0 in the first
    assert [b["n"] for b in reliability_bins([0.0, 0.3, 0.7, 1.0], [0, 0, 1, 1])] == [1, 0, 0, 1, 0, 0, 0, 1, 0, 1]
    # 0.0 wrong, 1.0 right: perfectly calibrated; 5 bins: [0.4, 0.6) holds 0.5 and 0.55 -> |0.525 - 0.5|
    assert expected_calibration_error([0.0, 1.0], [0, 1]) == 0.0
    assert expected_calibration_error([0.5, 0.55], [1, 0], bins=5) == pytest.approx(0.025)
    assert expected_calibration_error([], []) is None


def test_precision_coverage_curve_hand_computed():
    # accept >= 0.9: 1 field, 1 right; >= 0.8: 3, 2 right; >= 0.6: 4, 3 right; >= 0.3: 5, 3 right
    thresholds, coverage, precision = precision_coverage(CONF, RIGHT)
    assert thresholds.tolist() == [0.9, 0.8, 0.6, 0.3]
    assert coverage.tolist() == pytest.approx([1 / 5, 3 / 5, 4 / 5, 1])
    assert precision.tolist() == pytest.approx([1, 2 / 3, 3 / 4, 3 / 5])


def test_threshold_for_precision_takes_the_lowest_that_reaches_the_target():
    # precision by threshold (above): 0.9 -> 1, 0.8 -> 2/3, 0.6 -> 3/4, 0.3 -> 3/5.
    # 70%: 0.8 misses it but 0.6 reaches it again, and accepts more
    assert threshold_for_precision(CONF, RIGHT, 0.70) == 0.6
    assert threshold_for_precision(CONF, RIGHT, 0.75) == 0.6  # exactly 3/4 counts
    assert threshold_for_precision(CONF, RIGHT, 0.80) == 0.9
    assert threshold_for_precision(CONF, RIGHT, 0.60) == 0.3
    assert threshold_for_precision(CONF, [0, 0, 0, 0, 0], 0.5) is None


def test_certified_thresholds_use_the_clopper_pearson_lower_bound():
    # n of n right: (1 - level) ** (1 / n); 9 of 10 at 95%: 0.6058 (the textbook value)
    assert precision_lower_bound([3, 9, 0], [3, 10, 4], 0.95) == pytest.approx([0.05 ** (1 / 3), 0.60584, 0.0], abs=1e-5)
    # 299 right of 299 certifies 99% at 95%; 298 does not
    assert precision_lower_bound(299, 299, 0.95) >= 0.99 > precision_lower_bound(298, 298, 0.95)
    assert (fields_to_certify(0.99, 0.95), fields_to_certify(0.95, 0.95)) == (299, 59)
    assert precision_lower_bound(59, 59, 0.95) >= 0.95 > precision_lower_bound(58, 58, 0.95)
    # 400 fields, right above 0.2: the point estimate accepts 3 wrong ones (99.07% >= 99%),
    # the certified threshold only the 319 right ones (bound 99.06%)
    conf = np.linspace(0, 1, 400)
    right = conf > 0.2
    point, certified = threshold_for_precision(conf, right, 0.99), threshold_for_precision(conf, right, 0.99, 0.95)
    assert point == pytest.approx(77 / 399) and certified == pytest.approx(80 / 399)
    assert threshold_for_precision(conf[:200], right[:200], 0.99, 0.95) is None  # too few fields to certify 99%


def test_coverage_at_hand_computed():
    assert coverage_at(CONF, RIGHT, 0.7) == pytest.approx((3 / 5, 2 / 3))  # 0.9, 0.8, 0.8
    assert coverage_at(CONF, RIGHT, 0.6) == pytest.approx((4 / 5, 3 / 4))  # >= includes 0.6
    assert coverage_at(CONF, RIGHT, 0.95) == (0.0, None)
    assert coverage_at(CONF, RIGHT, None) == (0.0, None)  # no threshold: accept nothing


def test_confidence_report_overall_and_per_field():
    outcomes = [("a", 0.9, True), ("a", 0.8, True), ("b", 0.8, False), ("b", 0.6, True), ("a", 0.3, False)]
    report = confidence_report(outcomes, {"0.95": 0.85, "0.99": None})
    assert json.loads(json.dumps(report)) == report  # JSON-serialisable as is
    # overall: the five fields above
    assert (report["n"], report["accuracy"], report["auroc"]) == (5, 0.6, 0.75)
    assert report["ece"] == pytest.approx(0.28)
    assert report["at"] == {
        "0.95": {"threshold": 0.85, "coverage": 0.2, "precision": 1.0},  # only 0.9 is >= 0.85
        "0.99": {"threshold": None, "coverage": 0.0, "precision": None},
    }
    assert report["curve"]["threshold"] == [0.9, 0.8, 0.6, 0.3] and len(report["bins"]) == 10
    # a: 0.9 right, 0.8 right, 0.3 wrong -> AUROC 1; ECE (|0.9 - 1| + |0.8 - 1| + |0.3 - 0|) / 3 = 0.2
    a = report["per_field"]["a"]
    assert (a["n"], a["accuracy"], a["auroc"]) == (3, pytest.approx(2 / 3), 1.0) and a["ece"] == pytest.approx(0.2)
    assert a["at"]["0.95"] == {"threshold": 0.85, "coverage": pytest.approx(1 / 3), "precision": 1.0}
    # b: 0.8 wrong, 0.6 right -> AUROC 0; ECE (0.8 + 0.4) / 2 = 0.6; nothing reaches 0.85
    b = report["per_field"]["b"]
    assert (b["auroc"], b["accuracy"], b["at"]["0.95"]["coverage"]) == (0.0, 0.5, 0.0) and b["ece"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="no field"):
        confidence_report([])


# ---------------------------------------------------------------- the isotonic map


def test_isotonic_fit_is_exact_on_a_simple_case():
    # accuracies 0, 1, 0, 1 at 0.1 .. 0.4: pool-adjacent-violators merges 1, 0 into 0.5
    assert fit_isotonic([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1]) == ([0.1, 0.2, 0.3, 0.4], [0.0, 0.5, 0.5, 1.0])
    # equal confidences pool first: 0.2 -> 1 of 2 right; already monotone
    assert fit_isotonic([0.2, 0.6, 0.2], [1, 1, 0]) == ([0.2, 0.6], [0.5, 1.0])
    # a block keeps its first and last point only: {0.1, 0.2, 0.3} all wrong, {0.5, 0.7} right
    assert fit_isotonic([0.1, 0.2, 0.3, 0.5, 0.7], [0, 0, 0, 1, 1]) == ([0.1, 0.3, 0.5, 0.7], [0.0, 0.0, 1.0, 1.0])
    cmap = CalibrationMap("product", [0.1, 0.2, 0.3, 0.4], [0.0, 0.5, 0.5, 1.0])
    # linear in between, held at the ends
    assert [cmap.apply("any", v) for v in (0.0, 0.15, 0.25, 0.35, 0.4, 1.0)] == pytest.approx([0, 0.25, 0.5, 0.75, 1, 1])


def test_isotonic_map_is_monotone():
    rng = np.random.default_rng(0)
    conf = rng.random(500)
    right = rng.random(500) < conf**2
    cmap = CalibrationMap("min", *fit_isotonic(conf, right))
    mapped = [cmap.apply("f", v) for v in np.linspace(-0.1, 1.1, 1001)]
    assert np.all(np.diff(mapped) >= 0) and 0 <= min(mapped) and max(mapped) <= 1
    # each block's value is its accuracy, so the calibrated values average to the accuracy
    assert np.mean([cmap.apply("f", v) for v in conf]) == pytest.approx(right.mean())


def test_map_uses_a_field_map_where_it_has_one_and_calibrates_scores():
    cmap = CalibrationMap("min", [0.0, 1.0], [0.0, 1.0], per_field={"items": ([0.0, 1.0], [0.2, 0.4])})
    assert cmap.apply("items", 0.5) == pytest.approx(0.3) and cmap.apply("company", 0.5) == 0.5
    scores = {"/company": {"product": 0.1, "min": 0.8}, "/items/0": {"product": 0.1, "min": 1.0}}
    assert cmap.calibrate(scores) == pytest.approx({"/company": 0.8, "/items/0": 0.4})  # /items/0 is field items


def test_values_to_review_are_those_below_the_threshold_of_the_precision_asked():
    cmap = CalibrationMap("min", [0.0, 1.0], [0.0, 1.0], thresholds={"0.95": 0.9, "0.99": None})
    confidence = {"/company": 0.97, "/date": 0.9, "/total": 0.89}
    assert cmap.threshold(0.95) == 0.9 and cmap.threshold(0.99) is None
    assert cmap.to_review(confidence, 0.95) == ["/total"]  # at the threshold is accepted
    assert cmap.to_review(confidence, 0.99) == ["/company", "/date", "/total"]  # nothing certified: check all
    with pytest.raises(ValueError, match=r"^--review-at 0.9: the calibration map has thresholds for 0.95, 0.99 only$"):
        cmap.to_review(confidence, 0.9)


def test_map_save_load_round_trip_and_bad_files(tmp_path):
    cmap = CalibrationMap(
        "geomean", [0.1, 0.5, 0.9], [0.0, 0.6, 0.95], per_field={"a.b": ([0.2, 0.8], [0.1, 0.9])},
        thresholds={"0.95": 0.95, "0.99": None}, fitted_on={"dataset": "cal.jsonl", "fields": 40},
        candidates={"product": 0.7, "min": None, "geomean": 0.8},
    )
    path = cmap.save(tmp_path / CALIBRATION_FILE)
    assert CalibrationMap.load(path) == cmap
    assert json.loads(path.read_text())["per_field"] == {"a.b": {"x": [0.2, 0.8], "y": [0.1, 0.9]}}
    bad = tmp_path / "bad.json"
    decreasing = json.loads(path.read_text()) | {"y": [0.5, 0.4, 0.9]}
    for content in ("{", "[1, 2]", json.dumps({"aggregate": "product"}), json.dumps(decreasing),
                    json.dumps(decreasing | {"y": [0.0, 0.6, 0.95], "aggregate": "max"})):
        bad.write_text(content)
        with pytest.raises(ValueError, match=rf"^{bad}: not a calibration file written by model-garden calibrate \(") as info:
            CalibrationMap.load(bad)
        assert "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError, match="calibration file .*nope.json not found"):
        CalibrationMap.load(tmp_path / "nope.json")


# ---------------------------------------------------------------- from predictions


def test_field_outcomes_pairs_confidence_with_the_report():
    report = {"records": {
        "line": [1, 3, 5, 7],
        "json_valid": [1, 0, 1, 1],
        "fields": {
            "company": {"correct": [1, 0, 0, 1]}, "items": {"correct": [0, 0, None, 1]}, "total": {"correct": [0, 0, 1, 1]},
        },
    }}
    rows = [
        {"line": 1, "confidence": {"/company": 0.9, "/items/0": 0.8, "/items/1": 0.4, "/total": 0.7},
         "scores": {"/company": {"min": 0.5}, "/items/0": {"min": 0.3}, "/items/1": {"min": 0.6}, "/total": {"min": 0.2}}},
        {"line": 3, "confidence": {"/company": 0.99}},  # output not JSON: its confidence is ignored
        {"line": 5, "confidence": {"/company": 0.6}},  # no value for total: total is left out
    ]  # line 7 has no prediction: left out
    assert field_outcomes(rows, report) == [
        ("company", 0.9, True), ("items", 0.4, False), ("total", 0.7, False),  # items: the lower of its two leaves
        ("company", 0.0, False), ("items", 0.0, False), ("total", 0.0, False),  # invalid output: all wrong at 0
        ("company", 0.6, False),  # items: this gold has no such field
    ]
    assert field_outcomes(rows[:1], report, "min") == [("company", 0.5, True), ("items", 0.3, False), ("total", 0.2, False)]


def test_fit_map_per_field_maps_and_ties():
    # a: 30 values, 15 right; b: 30 values, only 2 wrong -> b uses the pooled map
    a = [("a", i / 30, i >= 15) for i in range(30)]
    b = [("b", i / 30, i >= 2) for i in range(30)]
    cmap = fit_map({"product": a + b}, "cal.jsonl")
    assert list(cmap.per_field) == ["a"]
    assert cmap.per_field["a"] == fit_isotonic([c for _, c, _ in a], [r for _, _, r in a])
    assert (cmap.x, cmap.y) == fit_isotonic([c for _, c, _ in a + b], [r for _, _, r in a + b])
    assert cmap.fitted_on == {"dataset": "cal.jsonl", "fields": 60}
    # equal AUROCs: product wins, whatever the order given
    same = [("a", 0.2, False), ("a", 0.9, True)]
    assert fit_map({"geomean": same, "min": same, "product": same}, "d").aggregate == "product"


def _chat(answer: dict) -> str:
    messages = [{"role": "user", "content": "Extract the name."}, {"role": "assistant", "content": json.dumps(answer)}]
    return json.dumps({"messages": messages}) + "\n"


# Six records, one field. (right, product, min, geomean) of each prediction; line 6 is not JSON.
PREDICTED = [
    (True, 0.9, 0.95, 0.97), (True, 0.8, 0.9, 0.9), (False, 0.85, 0.6, 0.92), (True, 0.5, 0.7, 0.85), (False, 0.4, 0.5, 0.6),
]


@pytest.fixture
def calibration_split(tmp_path):
    dataset = tmp_path / "cal.jsonl"
    dataset.write_text("".join(_chat({"name": f"N{i}"}) for i in range(1, 7)))
    preds = tmp_path / "preds.jsonl"
    rows = []
    for line, (right, product, low, geomean) in enumerate(PREDICTED, start=1):
        scores = {"/name": {"product": product, "min": low, "geomean": geomean, "raw_product": product, "free_tokens": 2}}
        output = json.dumps({"name": f"N{line}" if right else "X"})
        rows.append({"line": line, "output": output, "constrained": True, "confidence": {"/name": product}, "scores": scores})
    rows.append({"line": 6, "output": '{"name": "N', "constrained": True, "confidence": {}, "scores": {}})
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dataset, preds


def test_fit_calibration_hand_computed(calibration_split):
    dataset, preds = calibration_split
    cmap = fit_calibration(preds, dataset)
    # right: lines 1, 2, 4; wrong: 3, 5 and 6 (invalid: confidence 0 under every aggregate)
    # product: right {.9, .8, .5} vs wrong {.85, .4, 0}: 3 + 2 + 2 of 9 pairs = 7/9
    # min: right {.95, .9, .7} all above wrong {.6, .5, 0} -> 1
    # geomean: right {.97, .9, .85} vs wrong {.92, .6, 0}: 3 + 2 + 2 = 7/9
    assert cmap.candidates == pytest.approx({"product": 7 / 9, "min": 1.0, "geomean": 7 / 9})
    assert cmap.aggregate == "min"
    # min sorted: 0, .5, .6 wrong, .7, .9, .95 right -> blocks {0 .. .6} at 0, {.7 .. .95} at 1
    assert (cmap.x, cmap.y) == ([0.0, 0.6, 0.7, 0.95], [0.0, 0.0, 1.0, 1.0])
    assert cmap.per_field == {}  # 6 values of name, fewer than 30
    # calibrated: 1 for the three right fields, 0 for the rest: precision 100% from 1.0,
    # which three fields certify only down to 0.05 ** (1/3) = 36.8% at 95%: no threshold
    assert cmap.thresholds == {"0.95": None, "0.99": None} and cmap.threshold_level == 0.95
    point = fit_calibration(preds, dataset, level=None)
    assert point.thresholds == {"0.95": 1.0, "0.99": 1.0} and point.threshold_level is None
    assert cmap.fitted_on == {"dataset": str(dataset), "fields": 6}


def test_cli_calibrate_end_to_end(calibration_split, tmp_path):
    dataset, preds = calibration_split
    run = tmp_path / "run"
    run.mkdir()
    result = CliRunner().invoke(app, ["calibrate", "--predictions", str(preds), "--dataset", str(dataset), "--out", str(run)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich wraps
    assert CalibrationMap.load(run / CALIBRATION_FILE) == fit_calibration(preds, dataset)
    assert "AUROC of min │ 1.000 (chosen)" in text and "AUROC of product │ 0.778" in text
    # ECE before, on min: bin [0.9, 1]: {.95, .9} right -> 2 * 0.075; .7 right 0.3; .6, .5 wrong 0.6 + 0.5; 0 wrong 0
    # -> 1.55 / 6 = 25.8%; after: every calibrated value is 0 or 1 and right accordingly -> 0.0%
    assert "ECE before / after │ 25.8% / 0.0%" in text
    # 6 fields cannot certify anything: the table says how many it would take
    wide = CliRunner().invoke(app, ["calibrate", "--predictions", str(preds), "--dataset", str(dataset), "--out", str(run)], env={"COLUMNS": "250"})
    assert "│ none reaches it, certified at 95% (it takes at least 59 accepted fields, all right; the split has 6)" in wide.output
    assert "│ none reaches it, certified at 95% (it takes at least 299 accepted fields, all right; the split has 6)" in wide.output
    # --threshold-level 0: the split's own precision chooses
    result = CliRunner().invoke(app, ["calibrate", "--predictions", str(preds), "--dataset", str(dataset), "--out", str(run), "--threshold-level", "0"])
    assert "95% precision │ confidence >= 1.000: coverage 50.0%, precision 100.0%" in " ".join(result.output.split())
    assert CalibrationMap.load(run / CALIBRATION_FILE) == fit_calibration(preds, dataset, level=None)
    assert "fields scored │ 6 (accuracy 50.0%)" in text


def test_cli_refuses_predictions_without_scores(calibration_split, tmp_path):
    dataset, preds = calibration_split
    old = tmp_path / "old.jsonl"
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    old.write_text("".join(json.dumps({"line": r["line"], "output": r["output"]}) + "\n" for r in rows))  # before confidence
    args = ["calibrate", "--predictions", str(old), "--dataset", str(dataset), "--out", str(tmp_path / "c.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert f"{old}: no confidence scores" in text and "model-garden version that writes confidence" in text
    assert not (tmp_path / "c.json").exists()


def test_plots_write_pngs(tmp_path):
    outcomes = [("a", c, bool(r)) for c, r in zip(CONF, RIGHT)]
    reports = {"raw": confidence_report(outcomes, {"0.95": 0.85}), "calibrated": confidence_report(outcomes[:3])}
    for plot, name in ((plot_reliability, "reliability.png"), (plot_precision_coverage, "precision_coverage.png")):
        path = plot(reports, tmp_path / name)
        assert path == tmp_path / name and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
