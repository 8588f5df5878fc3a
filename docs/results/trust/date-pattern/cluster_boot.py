"""Robustness check of the 1-epoch arm's paired differences (trust.md) when the test
receipts are resampled by shop (the gold company) instead of one by one: a cluster
bootstrap over shops, seeds resampled too. Reads the study's eval files."""
import json, numpy as np
from pathlib import Path
RUNS, PAT = Path("/work/study/trust/runs"), Path("/work/study/trust-pattern")  # the study's working folders
gold = [json.loads(json.loads(l)["messages"][-1]["content"]) for l in open("/work/data/sroie-calib/test.jsonl")]
shops = sorted({g["company"] for g in gold}); cid = np.array([shops.index(g["company"]) for g in gold])
def acc(path):
    f = json.load(open(path))["records"]["fields"]
    return np.mean([np.array(v["correct"], dtype=float) for v in f.values()], axis=0)  # per receipt, share of fields right
def files(arm, seed):
    return {"constrained": RUNS / f"{arm}-seed{seed}/eval-constrained.json", "grounded": RUNS / f"{arm}-seed{seed}/eval-grounded.json",
            "grounded-pattern": PAT / f"{arm}-seed{seed}/eval-grounded-pattern.json"}
rng = np.random.default_rng(0)
def boot(a, b, seeds, arm="moderate@0.1", n=10000):
    d = np.array([acc(files(arm, s)[a]) - acc(files(arm, s)[b]) for s in seeds])  # seeds x receipts
    out = []
    for _ in range(n):
        ss = rng.integers(0, len(seeds), len(seeds))
        cl = rng.integers(0, len(shops), len(shops))
        idx = np.concatenate([np.flatnonzero(cid == c) for c in cl])
        out.append(d[ss][:, idx].mean())
    lo, hi = np.percentile(out, [2.5, 97.5])
    print(f"{a} - {b}: {d.mean()*100:+.2f} points, 95% cluster-bootstrap interval [{lo*100:+.2f}, {hi*100:+.2f}] ({len(shops)} shops, {len(seeds)} seeds)")
print("shops in the 100 test receipts:", len(shops), "largest:", max(np.bincount(cid)))
boot("grounded", "constrained", [0, 1, 2])
boot("grounded-pattern", "grounded", [0, 1, 2])
boot("grounded-pattern", "constrained", [0, 1, 2])
# Where the date pattern's gain comes from, by shop (fields right, summed over seeds).
d = sum(acc(files("moderate@0.1", s)["grounded-pattern"]) - acc(files("moderate@0.1", s)["grounded"]) for s in (0, 1, 2)) * 4
by = {shops[c]: int(round(d[cid == c].sum())) for c in range(len(shops))}
print("fields gained by the pattern, by shop (nonzero):", {k[:30]: v for k, v in sorted(by.items(), key=lambda kv: -abs(kv[1])) if v})
