"""The default-recipe rule of ``docs/selective-loss.md``, as code, applied to ``compare`` summaries.

The rule was written before the results it uses; putting it in code means choosing the
default is a computation anyone can rerun, not a reading of tables:

1. Candidates: ``none``, ``moderate``, ``moderate@0.1``, ``moderate@linear:1.0->0.0``.
2. Out: an arm whose JSON validity under free decoding is resolved below the baseline's
   on the dataset that decoded freely (SROIE).
3. Of the rest, the arm with the largest mean paired field-accuracy gain (constrained
   decoding) over all datasets, among those resolved better on at least one dataset and
   resolved worse on none; if no arm qualifies, the baseline. (An exact tie, which the rule
   does not settle, goes to the arm listed first above.)

"Resolved" is the reports' meaning: the paired 95% interval excludes 0.

Run it on the studies' ``summary.json`` files, in any order (one must have free decoding):
``python -m model_garden.experiments.recipe sroie3/summary.json forms32b/summary.json forms200/summary.json``
(``forms32b`` is the 32-form study's second stage, whose summary holds every candidate).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("none", "moderate", "moderate@0.1", "moderate@linear:1.0->0.0")
ACCURACY = "constrained/field_accuracy"
FREE_VALIDITY = "free/json_valid"


@dataclass
class Choice:
    strategy: str
    reasons: list[str] = field(default_factory=list)


def _paired(summary: dict[str, Any], arm: str, key: str) -> dict[str, float] | None:
    return summary["table"].get(arm, {}).get(key, {}).get("paired")


def choose(summaries: dict[str, dict[str, Any]]) -> Choice:
    """Apply the rule to ``{dataset name: compare summary}``; every candidate must be in every summary."""
    baseline = {s["baseline"] for s in summaries.values()}
    if baseline != {CANDIDATES[0]}:
        raise ValueError(f"the rule compares against {CANDIDATES[0]!r}; the summaries' baselines are {sorted(baseline)}")
    for name, summary in summaries.items():
        missing = [arm for arm in CANDIDATES[1:] if _paired(summary, arm, ACCURACY) is None]
        if missing:
            raise ValueError(f"{name}: no paired {ACCURACY} for {', '.join(missing)}; run every candidate there")
    if not any(_paired(s, CANDIDATES[1], FREE_VALIDITY) for s in summaries.values()):
        raise ValueError(f"no summary has {FREE_VALIDITY}: one study must decode freely (compare --decodings)")
    reasons, gains = [], {}
    for arm in CANDIDATES[1:]:
        validity = [p for s in summaries.values() if (p := _paired(s, arm, FREE_VALIDITY))]
        if any(p["high"] < 0 for p in validity):
            reasons.append(f"{arm}: out, free-decoding JSON validity resolved below {CANDIDATES[0]}")
            continue
        paired = {name: _paired(s, arm, ACCURACY) for name, s in summaries.items()}
        shown = ", ".join(f"{name} {100 * p['diff']:+.1f} [{100 * p['low']:+.1f}, {100 * p['high']:+.1f}]" for name, p in paired.items())
        mean = sum(p["diff"] for p in paired.values()) / len(paired)
        if any(p["high"] < 0 for p in paired.values()):
            reasons.append(f"{arm}: out, resolved worse somewhere ({shown})")
        elif not any(p["low"] > 0 for p in paired.values()):
            reasons.append(f"{arm}: out, resolved better nowhere ({shown})")
        else:
            gains[arm] = mean
            reasons.append(f"{arm}: qualifies, mean gain {100 * mean:+.2f} points ({shown})")
    strategy = max(gains, key=gains.__getitem__) if gains else CANDIDATES[0]
    return Choice(strategy, reasons)


def main(paths: list[str]) -> None:
    if not paths:
        sys.exit("usage: python -m model_garden.experiments.recipe SUMMARY.json [SUMMARY.json ...]")
    summaries = {}
    for path in paths:
        try:
            summaries[str(Path(path).parent)] = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            sys.exit(f"error: {path}: not a readable compare summary ({error})")
    try:
        choice = choose(summaries)
    except (ValueError, KeyError) as error:
        sys.exit(f"error: {error}")
    print("\n".join(choice.reasons))
    print(f"default strategy: {choice.strategy}")


if __name__ == "__main__":
    main(sys.argv[1:])
