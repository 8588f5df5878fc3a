"""The default-recipe rule (``experiments.recipe``) on hand-made ``compare`` summaries.

Run: ``python -m pytest tests/test_recipe.py -q``
"""

from __future__ import annotations

import json

import pytest

from model_garden.experiments.recipe import choose, main


def _summary(accuracy: dict[str, tuple[float, float, float]], validity: dict[str, tuple[float, float, float]] | None = None):
    """A summary with paired (diff, low, high) per arm, as ``summary.summarize`` writes them."""
    table = {"none": {}}
    for arm, (diff, low, high) in accuracy.items():
        table.setdefault(arm, {})["constrained/field_accuracy"] = {"paired": {"diff": diff, "low": low, "high": high}}
    for arm, (diff, low, high) in (validity or {}).items():
        table[arm]["free/json_valid"] = {"paired": {"diff": diff, "low": low, "high": high}}
    return {"baseline": "none", "table": table}


SAFE = (0.0, -0.01, 0.01)


def test_broken_free_decoding_excludes_the_largest_gain():
    sroie = _summary(
        {"moderate": (0.05, 0.02, 0.08), "moderate@0.1": (0.03, 0.01, 0.05), "moderate@linear:1.0->0.0": (0.01, -0.01, 0.03)},
        {"moderate": (-0.9, -1.0, -0.8), "moderate@0.1": SAFE, "moderate@linear:1.0->0.0": SAFE},
    )
    forms = _summary({"moderate": (0.03, 0.01, 0.05), "moderate@0.1": (0.02, 0.0, 0.04), "moderate@linear:1.0->0.0": (0.04, -0.01, 0.09)})
    choice = choose({"sroie": sroie, "forms": forms})
    # moderate has the largest gain but breaks free decoding; linear's mean gain equals
    # moderate@0.1's (2.5 points) but is resolved nowhere.
    assert choice.strategy == "moderate@0.1"
    assert choice.reasons[0].startswith("moderate: out, free-decoding JSON validity")
    assert choice.reasons[2].startswith("moderate@linear:1.0->0.0: out, resolved better nowhere")


def test_largest_mean_gain_wins_and_resolved_worse_is_out():
    sroie = _summary(
        {"moderate": (0.02, 0.01, 0.03), "moderate@0.1": (0.01, 0.001, 0.02), "moderate@linear:1.0->0.0": (0.08, 0.05, 0.1)},
        {"moderate": SAFE, "moderate@0.1": SAFE, "moderate@linear:1.0->0.0": SAFE},
    )
    forms = _summary({"moderate": (0.0, -0.02, 0.02), "moderate@0.1": (0.03, 0.0, 0.06), "moderate@linear:1.0->0.0": (-0.03, -0.05, -0.01)})
    choice = choose({"sroie": sroie, "forms": forms})
    assert choice.strategy == "moderate@0.1"  # 2.0 points mean against moderate's 1.0; linear is out
    assert "resolved worse somewhere" in choice.reasons[2]
    assert "mean gain +2.00 points" in choice.reasons[1]


def test_no_qualifying_arm_keeps_the_baseline():
    unresolved = {arm: (0.01, -0.01, 0.03) for arm in ("moderate", "moderate@0.1", "moderate@linear:1.0->0.0")}
    sroie = _summary(unresolved, {arm: SAFE for arm in unresolved})
    assert choose({"sroie": sroie, "forms": _summary(unresolved)}).strategy == "none"


def test_incomplete_studies_are_refused(tmp_path, capsys):
    arms = {"moderate": SAFE, "moderate@0.1": SAFE}
    with pytest.raises(ValueError, match="forms: no paired constrained/field_accuracy for moderate@linear"):
        choose({"forms": _summary(arms)})
    all_arms = {**arms, "moderate@linear:1.0->0.0": SAFE}
    with pytest.raises(ValueError, match="one study must decode freely"):
        choose({"forms": _summary(all_arms)})
    (tmp_path / "sroie").mkdir()
    (tmp_path / "sroie" / "summary.json").write_text(json.dumps(_summary(all_arms, all_arms)))
    main([str(tmp_path / "sroie" / "summary.json")])
    assert capsys.readouterr().out.endswith("default strategy: none\n")
    with pytest.raises(SystemExit, match=r"forms200/summary.json: not a readable compare summary"):
        main([str(tmp_path / "sroie" / "summary.json"), str(tmp_path / "forms200" / "summary.json")])
