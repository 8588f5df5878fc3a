"""Paired statistics of ``compare``: exact McNemar, the hierarchical bootstrap, verdicts,
steps to convergence, and their wiring into ``summarize`` from per-record outcomes.

Run: ``python -m pytest tests/test_stats.py -q``
"""

from __future__ import annotations

import numpy as np
import pytest

from model_garden.evaluation.errors import KINDS, error_kinds
from model_garden.evaluation.metrics import aggregate, score_records
from model_garden.experiments.report import markdown
from model_garden.experiments.summary import summarize
from model_garden.experiments.stats import (
    Difference,
    mcnemar,
    paired_bootstrap,
    seed_difference,
    steps_to_convergence,
    verdict,
)

# ---------------------------------------------------------------- McNemar


def test_mcnemar_hand_computed_table():
    # 8 records only the strategy gets right, 2 only the baseline, 5 both, 3 neither.
    # Exact two-sided p = 2 * P(X >= 8 | X ~ Bin(10, 1/2)) = 2 * (45 + 10 + 1) / 1024.
    strategy = [1] * 8 + [0] * 2 + [1] * 5 + [0] * 3
    baseline = [0] * 8 + [1] * 2 + [1] * 5 + [0] * 3
    assert mcnemar(strategy, baseline) == {"b": 8, "c": 2, "p": pytest.approx(0.109375, abs=1e-12)}
    # Symmetric; 9 vs 1 is significant: 2 * (1 + 10) / 1024
    assert mcnemar(baseline, strategy)["p"] == pytest.approx(0.109375)
    assert mcnemar([1] * 9 + [0], [0] * 9 + [1])["p"] == pytest.approx(22 / 1024)
    # No discordant pair: nothing against the null
    assert mcnemar([1, 0, 1], [1, 0, 1]) == {"b": 0, "c": 0, "p": 1.0}


# ---------------------------------------------------------------- bootstrap


def _synthetic(p_base: float, p_strat: float, seeds: int = 4, records: int = 300, seed: int = 7):
    """0/1 outcomes per (seed, record): record difficulty shared by both strategies (it
    cancels when paired), a per-seed shift, and the strategies' own rates."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 1, size=(1, records))
    shift = rng.normal(0, 0.1, size=(seeds, 1))
    noise = rng.normal(0, 1, size=(2, seeds, records))
    base = (difficulty + shift + noise[0] < _threshold(p_base)).astype(float)
    strat = (difficulty + shift + noise[1] < _threshold(p_strat)).astype(float)
    ones = np.ones((seeds, records))
    return (strat, ones), (base, ones)


def _threshold(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p) * np.sqrt(2))  # difficulty + noise has variance 2


def test_bootstrap_resolves_a_large_known_difference():
    strategy, baseline = _synthetic(0.55, 0.75)
    d = paired_bootstrap(strategy, baseline)
    observed = strategy[0].mean() - baseline[0].mean()
    assert d.diff == pytest.approx(observed)  # the point estimate is the pooled difference
    assert d.low < 0.20 < d.high  # covers the true difference
    assert d.low > 0 and d.resolved
    assert d.method == "hierarchical bootstrap" and (d.seeds, d.records) == (4, 300)
    assert d.detectable == pytest.approx(2.8016 * d.se, rel=1e-4)  # (z 0.975 + z 0.80) x SE
    # Reproducible: a fixed generator seed
    assert paired_bootstrap(strategy, baseline) == d


def test_bootstrap_by_cluster_counts_records_that_move_together():
    # 10 clusters of 20 records; within a cluster the strategy is right on all records or
    # none (a shop whose layout decides every receipt): the evidence is 10 draws, not 200.
    # The same on every seed, so only the records' variance counts.
    per_cluster = np.tile(np.array([1, 1, 1, 0, 1, 0, 0, 1, 0, 1], dtype=bool), (3, 1))
    strategy = (np.repeat(per_cluster, 20, axis=1).astype(float), np.ones((3, 200)))
    baseline = (np.zeros((3, 200)), np.ones((3, 200)))
    shops = [f"shop{i // 20}" for i in range(200)]
    plain = paired_bootstrap(strategy, baseline)
    clustered = paired_bootstrap(strategy, baseline, clusters=shops)
    # The same data summarised one row per cluster: what the clustered bootstrap should match.
    collapsed = paired_bootstrap((per_cluster.astype(float), np.ones((3, 10))), (np.zeros((3, 10)), np.ones((3, 10))))
    assert clustered.diff == plain.diff == pytest.approx(per_cluster.mean())
    assert clustered.se == pytest.approx(collapsed.se, rel=0.1)
    assert clustered.se > 3 * plain.se  # about sqrt(20) wider
    assert clustered.method == "hierarchical bootstrap over 10 clusters" and clustered.records == 200
    # Every record its own cluster: the plain bootstrap's spread.
    singletons = paired_bootstrap(strategy, baseline, clusters=list(range(200)))
    assert singletons.se == pytest.approx(plain.se, rel=0.1)
    with pytest.raises(ValueError, match="2 clusters for 200 records"):
        paired_bootstrap(strategy, baseline, clusters=["a", "b"])


def test_bootstrap_draws_the_records_once_for_every_seed():
    # Every seed is judged on the same records and here agrees on each: the strategy wins
    # record r on all seeds or on none. The evidence is 100 records, not 300: the
    # standard error is that of a mean of 100 values, sd / sqrt(100), not sd / sqrt(300).
    wins = np.random.default_rng(5).random(100) < 0.5
    strategy = (np.tile(wins, (3, 1)).astype(float), np.ones((3, 100)))
    baseline = (np.zeros((3, 100)), np.ones((3, 100)))
    d = paired_bootstrap(strategy, baseline)
    assert d.se == pytest.approx(wins.std() / np.sqrt(100), rel=0.1)
    # Seed-by-record noise alone (no shared record effect) is counted about once per cell:
    # the crossed draw is mildly conservative, never narrower than cells drawn independently.
    noise = (np.random.default_rng(6).random((3, 100)) < 0.5).astype(float)
    cells = paired_bootstrap((noise, np.ones((3, 100))), baseline)
    assert noise.std() / np.sqrt(300) * 0.9 < cells.se < noise.std() / np.sqrt(300) * 2


def test_record_clusters_from_a_key_or_the_gold_reply(tmp_path):
    import json

    from model_garden.data.sample import DataError
    from model_garden.experiments.paired import record_clusters

    path = tmp_path / "test.jsonl"
    rows = [("A", "x"), ("B", "y"), ("A", "z")]
    path.write_text("".join(json.dumps({"vendor": v, "messages": [
        {"role": "user", "content": "receipt"}, {"role": "assistant", "content": json.dumps({"shop": {"name": n}})}]}) + "\n"
        for v, n in rows), encoding="utf-8")
    assert record_clusters(path, "vendor") == {1: '"A"', 2: '"B"', 3: '"A"'}
    assert record_clusters(path, "/shop/name") == {1: '"x"', 2: '"y"', 3: '"z"'}
    with pytest.raises(DataError, match=r"test.jsonl:1: --cluster-by /shop/city: the record has no such value in its reply"):
        record_clusters(path, "/shop/city")
    with pytest.raises(DataError, match=r"test.jsonl:1: --cluster-by store: the record has no such key"):
        record_clusters(path, "store")


def test_bootstrap_does_not_resolve_no_difference():
    strategy, baseline = _synthetic(0.6, 0.6, seed=3)
    d = paired_bootstrap(strategy, baseline)
    assert d.low < 0 < d.high and not d.resolved
    assert 0 < d.detectable < 0.1
    assert verdict(d, "x", higher_is_better=True, scale=100, digits=1, unit="points").startswith("not resolved:")


def test_bootstrap_pairs_records_and_counts_seed_variance():
    # Paired on the same records: equal outcomes, however varied, differ by exactly 0 in
    # every resample (unpaired resampling would spread around 0)
    base = (np.random.default_rng(0).random((2, 30)) < 0.5).astype(float)
    ones = np.ones((2, 30))
    same = paired_bootstrap((base.copy(), ones), (base, ones))
    assert (same.diff, same.low, same.high, same.se) == (0, 0, 0, 0)
    assert verdict(same, "x", higher_is_better=True).startswith("no difference")
    # Seed variance: record-level noise is nil, but seeds disagree -> a wide interval
    seeds = np.array([[1.0] * 50, [0.0] * 50, [1.0] * 50])
    wide = paired_bootstrap((seeds, np.ones((3, 50))), (np.zeros((3, 50)), np.ones((3, 50))))
    assert wide.low == 0 and wide.high == 1


def test_bootstrap_of_a_ratio_metric_and_refusals():
    # Pooled ratios: sum(num) / sum(den), records of unequal weight
    num_a, den_a = np.array([[2.0, 0.0, 3.0]]), np.array([[2.0, 1.0, 4.0]])
    num_b, den_b = np.array([[1.0, 0.0, 3.0]]), np.array([[2.0, 1.0, 4.0]])
    assert paired_bootstrap((num_a, den_a), (num_b, den_b)).diff == pytest.approx(5 / 7 - 4 / 7)
    assert paired_bootstrap((num_a, den_a * 0), (num_b, den_b)) is None  # counts nothing
    with pytest.raises(ValueError, match="share a"):
        paired_bootstrap((num_a, den_a), (num_b[:, :2], den_b[:, :2]))


def test_seed_difference_and_verdicts():
    d = seed_difference([0.01, 0.03])
    assert d.diff == pytest.approx(0.02) and d.high - d.diff == pytest.approx(12.7062047 * 0.01, rel=1e-6)
    assert d.method == "Student t over seeds" and not d.resolved
    assert seed_difference([0.5]).low is None and seed_difference([]) is None
    # every seed agrees: the t interval has zero width, so only the exact sign test (p = 2 x 0.5^n) can resolve
    three, six = seed_difference([-25, -25, -25]), seed_difference([-25] * 6)
    assert three.unanimous and three.sign_p == 0.25 and not three.resolved
    assert six.sign_p == pytest.approx(0.03125) and six.resolved
    assert verdict(six, "x", higher_is_better=False, digits=0, unit="steps").startswith("resolved: x better by 25 steps on each of the 6")
    assert not seed_difference([0, 0, 0]).resolved and not seed_difference([0, 0, 0]).unanimous
    resolved = Difference(0.039, 0.012, 0.065, 0.013, 0.036, "hierarchical bootstrap", 3, 100)
    assert verdict(resolved, "moderate", higher_is_better=True, scale=100, digits=1, unit="points") == (
        "resolved: moderate better by 3.9 points [+1.2, +6.5]"
    )
    assert verdict(resolved, "moderate", higher_is_better=False, scale=100, digits=1, unit="points").startswith(
        "resolved: moderate worse by 3.9 points"
    )
    unresolved = Difference(0.039, -0.012, 0.09, 0.026, 0.0728, "hierarchical bootstrap", 3, 100)
    assert verdict(unresolved, "x", higher_is_better=True, scale=100, digits=1, unit="points") == (
        "not resolved: +3.9 points [-1.2, +9.0]; the study could have detected about 7.3 points"
    )
    assert verdict(None, "x", higher_is_better=True) == "no paired data"


# ---------------------------------------------------------------- convergence


def test_steps_to_convergence():
    curve = [(0, 0.0), (25, 0.40), (50, 0.71), (75, 0.70), (100, 0.74)]
    assert steps_to_convergence(curve) == 50  # 0.71 >= 0.95 x 0.74 = 0.703
    assert steps_to_convergence(curve, fraction=0.99) == 100
    assert steps_to_convergence([(0, 0.2), (10, 0.9), (20, 0.5)]) == 10  # the first point >= 0.475, not the peak
    assert steps_to_convergence([]) is None
    assert steps_to_convergence([(0, 0.0), (10, 0.0)]) is None  # nothing learned
    # A loss converges when it is within 1/0.95 of its final value
    loss = [(0, 2.0), (25, 0.08), (50, 0.071), (75, 0.0705), (100, 0.07)]
    assert steps_to_convergence(loss, higher_is_better=False) == 50  # 0.071 x 0.95 <= 0.07


# ---------------------------------------------------------------- summarize


def _run(strategy, seed, preds, golds, decoded=None):
    records = {"line": list(range(1, len(golds) + 1)), **score_records(preds, golds)}
    train = {"eval_value_loss": [[0, 1.0], [10, 0.5]], "train_runtime_s": 10.0 + seed}
    if decoded is not None:
        train["decoded_eval"] = [[s, {"json_valid": 1.0, "field_accuracy": a}] for s, a in decoded]

    evaluated = {"constrained": aggregate(records)}
    correct = {name: column["correct"] for name, column in records["fields"].items()}
    errors = {"constrained": error_kinds(preds, golds, [None] * len(golds), correct)["counts"]}
    return {"strategy": strategy, "seed": seed, "train": train, "eval": evaluated, "records": {"constrained": records}, "errors": errors}


def test_summary_pairs_records_tests_fields_and_gives_verdicts():
    golds = [{"a": str(i), "b": None} for i in range(40)]
    runs = []
    for seed in (0, 1, 2):
        # baseline: a right on the first 20 records; strategy: on the first 36;
        # b (gold null) right everywhere except where the strategy's output is invalid
        base = [{"a": str(i) if i < 20 else "?", "b": None} for i in range(40)]
        strat = [{"a": str(i) if i < 36 else "?", "b": None} for i in range(39)] + [None]
        runs += [
            _run("none", seed, base, golds, decoded=[(0, 0.2), (10, 0.5), (20, 0.75)]),
            _run("x", seed, strat, golds, decoded=[(0, 0.2), (10, 0.9), (20, 0.93)]),
        ]
    summary = summarize(runs, ["none", "x"])
    cell = summary["table"]["x"]["constrained/field_accuracy_filled"]
    assert cell["diff"] == pytest.approx(36 / 40 - 20 / 40)
    assert cell["paired"]["method"] == "hierarchical bootstrap" and cell["paired"]["records"] == 40
    assert cell["verdict"].startswith("resolved: x better by 40.0 points")
    # all fields: a right on 36 records, b on all but the invalid one -> (36 + 39) / 80 vs (20 + 40) / 80
    assert summary["table"]["x"]["constrained/field_accuracy"]["diff"] == pytest.approx((36 + 39) / 80 - 60 / 80)
    json_valid = summary["table"]["x"]["constrained/json_valid"]
    assert json_valid["diff"] == pytest.approx(-1 / 40) and json_valid["paired"]["low"] < 0
    # McNemar pooled over 3 seeds: a: 16 records x 3 only the strategy got right;
    # b: the invalid record, 1 x 3 only the baseline got right
    tests = summary["mcnemar"]["x"]["constrained"]
    assert (tests["a"]["b"], tests["a"]["c"], tests["a"]["pairs"]) == (48, 0, 120)
    assert (tests["b"]["b"], tests["b"]["c"]) == (0, 3) and tests["b"]["p"] == pytest.approx(0.25)
    # wrong fields by kind, per run: the baseline's 20 wrong a; the strategy's 3 wrong a and its invalid record's 2 fields
    assert summary["errors"]["none"]["constrained"] == {k: 20.0 if k == "other" else 0.0 for k in KINDS}
    assert summary["errors"]["x"]["constrained"] == {k: {"other": 3.0, "invalid": 2.0}.get(k, 0.0) for k in KINDS}
    assert "| x | constrained | 2.0 | 0.0 | 0.0 | 0.0 | 0.0 | 3.0 |" in markdown(summary)
    # steps to convergence from decoded field accuracy: none 20 (0.5 < 0.7125), x 10
    assert summary["convergence"] == "steps to 95% of final decoded field accuracy"
    assert summary["table"]["none"]["steps_to_convergence"]["mean"] == 20
    assert summary["table"]["x"]["steps_to_convergence"]["mean"] == 10
    conv = summary["table"]["x"]["steps_to_convergence"]
    # run-level: Student t over the 3 seed differences, all -10: a zero-width interval, so only the sign test counts
    assert conv["paired"]["method"] == "Student t over seeds" and conv["verdict"] == (
        "not resolved: -10 steps on each of the 3 seeds (equal differences give a zero-width t interval; "
        "exact sign test p = 0.25)"
    )
    text = markdown(summary)
    assert "| constrained: field accuracy (gold not null) ↑ | resolved: x better by 40.0 points" in text
    assert "| a | 48 / 0, p = " in text and "decoded_curves.png" in text and "2.80 x" in text


def test_summary_pairs_two_decodings_of_the_same_runs():
    # One strategy, three seeds, two decodings of each run: grounded right on a for the
    # first 32 records, constrained on the first 24 but also on record 35, which grounded misses.
    golds = [{"a": str(i)} for i in range(40)]
    runs = []
    for seed in (0, 1, 2):
        run = _run("none", seed, [{"a": str(i) if i < 24 or i == 35 else "?"} for i in range(40)], golds)
        grounded = {"line": run["records"]["constrained"]["line"], **score_records(
            [{"a": str(i) if i < 32 else "?"} for i in range(40)], golds)}
        run["records"]["grounded"] = grounded
        run["eval"]["grounded"] = aggregate(grounded)
        runs.append(run)
    summary = summarize(runs, ["none"])
    res = summary["across_decodings"]["none"]["grounded"]
    acc = res["differences"]["field_accuracy"]
    assert acc["diff"] == pytest.approx(32 / 40 - 25 / 40) and acc["method"] == "hierarchical bootstrap"
    assert acc["seeds"] == 3 and acc["records"] == 40 and acc["low"] > 0 and acc["resolved"]
    assert acc["verdict"].startswith("resolved: grounded better by 17.5 points")
    assert res["differences"]["json_valid"]["diff"] == 0
    # records 24-31 x 3 seeds only grounded got right, record 35 x 3 only constrained
    assert (res["mcnemar"]["a"]["b"], res["mcnemar"]["a"]["c"], res["mcnemar"]["a"]["pairs"]) == (24, 3, 120)
    text = markdown(summary)
    assert "### `grounded` against `constrained` decoding, on the `none` runs" in text
    assert "| field accuracy | resolved: grounded better by 17.5 points" in text and "| a | 24 / 3, p = " in text
    # Records in 2 clusters (grounded's gain, records 24-31, all in the first): 2 draws: a wider interval.
    clustered = summarize(runs, ["none"], clusters={line: "early" if line <= 32 else "late" for line in range(1, 41)})
    by_cluster = clustered["across_decodings"]["none"]["grounded"]["differences"]["field_accuracy"]
    assert by_cluster["diff"] == acc["diff"] and by_cluster["method"] == "hierarchical bootstrap over 2 clusters"
    assert by_cluster["high"] - by_cluster["low"] > acc["high"] - acc["low"] and clustered["bootstrap"]["clusters"] == 2
    assert "`--cluster-by /shop`, 2 clusters" in markdown(clustered | {"config": {"cluster_by": "/shop"}})
    # A dataset changed after the runs (a scored line without a cluster): one line, not a KeyError.
    from model_garden.data.sample import DataError

    with pytest.raises(DataError, match="no record at line 40, which the runs scored"):
        summarize(runs, ["none"], clusters={line: "a" for line in range(1, 40)})
    # a run without the other decoding's per-record outcomes pairs nothing
    del runs[0]["records"]["grounded"]
    assert summarize(runs, ["none"])["across_decodings"] == {}


def test_summary_without_decoded_eval_falls_back_to_the_value_loss():
    golds = [{"a": "1"}, {"a": "2"}]
    runs = [_run("none", 0, golds, golds), _run("x", 0, [None, None], golds)]
    summary = summarize(runs, ["none", "x"])
    assert summary["convergence"] == "steps to within 1/0.95 of final eval value loss"
    assert summary["table"]["x"]["steps_to_convergence"]["mean"] == 10
    # one seed, two records: the bootstrap counts record variance only
    acc = summary["table"]["x"]["constrained/field_accuracy"]
    assert acc["diff"] == -1.0 and acc["paired"]["seeds"] == 1
    assert "decoded_curves.png" not in markdown(summary)


def test_a_number_missing_on_some_runs_says_on_how_many_it_exists():
    golds = [{"a": "1"}, {"a": "2"}]
    runs = [_run(s, seed, golds, golds) for seed in (0, 1, 2) for s in ("none", "x")]
    runs[1]["train"]["eval_value_loss"] = [[0, 1.0], [10, 0.6]]  # x, seed 0: never reaches none's best (0.5)
    summary = summarize(runs, ["none", "x"])
    assert summary["runs"]["x-seed0"]["steps_to_target"] is None
    assert "| steps to baseline's best ↓ | 10 ± 0 | 10 ± 0 (+0 [+0, +0]) (2 of 3 runs) |" in markdown(summary)
