"""The 1-epoch arm's decodings on the 100 test receipts, per seed and paired across
decodings on the same runs (model_garden.experiments.paired.across_decodings).
Usage: pair.py  (reads /work/study/trust/runs and /work/study/trust-pattern)"""
import json
from pathlib import Path
from model_garden.experiments.paired import across_decodings
from model_garden.experiments.stats import verdict, Difference

RUNS, PAT = Path("/work/study/trust/runs"), Path("/work/study/trust-pattern")
files = {"constrained": "eval-constrained.json", "grounded": "eval-grounded.json"}
runs = []
for seed in (0, 1, 2):
    name = f"moderate@0.1-seed{seed}"
    paths = {d: RUNS / name / f for d, f in files.items()} | {"grounded-pattern": PAT / name / "eval-grounded-pattern.json"}
    have = {d: json.loads(p.read_text()) for d, p in paths.items() if p.is_file()}
    if not have:
        continue
    runs.append({"seed": seed, "records": {d: e["records"] for d, e in have.items()}, "evals": have})
    for d, e in have.items():
        m, c = e["metrics"], e["confidence"]
        pf = {k: round(v["accuracy"] * 100) for k, v in m["per_field"].items()}
        pa = {k: round(v["auroc"], 2) if v.get("auroc") is not None else None for k, v in c["per_field"].items()}
        sc = e["source_check"]
        print(f"seed {seed} {d:17s} valid {m['json_valid']*100:.0f}% acc {m['field_accuracy']*100:.2f}% {pf} outside {sc['values_outside']}/{sc['values']} "
              f"AUROC {c['auroc']:.3f} {pa} ECE {c['ece']*100:.1f}% at95 {c['at']['0.95']['coverage']:.2f} at99 {c['at']['0.99']['coverage']:.2f} "
              f"agg {c['calibration']['aggregate']} s {e['predict']['seconds']:.0f} tok {e['predict']['new_tokens']}")
for a, b in (("grounded", "constrained"), ("grounded-pattern", "grounded"), ("grounded-pattern", "constrained")):
    both = [r for r in runs if a in r["records"] and b in r["records"]]
    res = across_decodings(both, a, b) if both else None
    if not res:
        continue
    print(f"\n{a} against {b}, seeds {[r['seed'] for r in both]}")
    for k, d in res["differences"].items():
        print(f"  {k}: {verdict(d, a, higher_is_better=True, scale=100, digits=1, unit='points')}")
    for f, t in res["mcnemar"].items():
        print(f"  {f}: b {t['b']} c {t['c']} p {t['p']:.3g} pairs {t['pairs']}")
