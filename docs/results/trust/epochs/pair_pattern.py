"""Epochs under the same decoder with the date pattern: `+2ep` seeds 1 and 2's grounded
decoding as `compare` made it (their data's schema carries the date pattern; trust.md, note
of 2026-12-06 10:11) against the 1-epoch arm's grounded decoding with that pattern
(date-pattern/), the same seeds. Descriptive, two seeds, not the epochs rule (which reads
the plain constraint without the pattern); paired per seed and test receipt, the crossed
bootstrap of model_garden.experiments.paired (current code), McNemar per field.
Usage: python docs/results/trust/epochs/pair_pattern.py  (reads the committed records only)"""
import json
from pathlib import Path

from model_garden.experiments.paired import field_tests, paired_eval
from model_garden.experiments.stats import verdict

TRUST = Path(__file__).resolve().parents[1]


def run(path: Path, seed: int) -> dict:
    # Both sides under one decoding name, so paired_eval pairs them as two strategies.
    return {"seed": seed, "records": {"grounded": json.loads(path.read_text())["records"]}}


seeds = (1, 2)  # +2ep seed 0 decoded without the pattern
two = [run(TRUST / "runs" / f"moderate@0.1+2ep-seed{s}" / "eval-grounded.json", s) for s in seeds]
one = [run(TRUST / "date-pattern" / f"moderate@0.1-seed{s}" / "eval-grounded-pattern.json", s) for s in seeds]
for key in ("field_accuracy", "json_valid"):
    d = paired_eval(two, one, "grounded", key)
    print(f"{key}: {verdict(d, '+2ep grounded', higher_is_better=True, scale=100, digits=1, unit='points')}")
for name, t in field_tests(two, one, "grounded").items():
    print(f"  {name}: b {t['b']} c {t['c']} p {t['p']:.3g} pairs {t['pairs']}")
