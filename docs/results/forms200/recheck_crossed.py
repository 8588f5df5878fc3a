"""The forms200 study's paired intervals again, with the bootstrap that draws the eval
records once for every seed (model_garden.experiments.stats, since 2026-12-06), beside
the intervals summary.json holds (records drawn anew within each seed). A check made
after the study; it changes nothing the study decided unless a verdict flips.

Run: ``.venv/bin/python docs/results/forms200/recheck_crossed.py > docs/results/forms200/recheck_crossed.txt``
"""

import json
from pathlib import Path

from model_garden.experiments.paired import paired_eval

HERE = Path(__file__).resolve().parent
summary = json.loads((HERE / "summary.json").read_text())


def run(name: str) -> dict:
    folder = HERE / "runs" / name
    if (folder / "same_as.json").is_file():  # an arm whose masks equal another's shares its run
        folder = HERE / "runs" / json.loads((folder / "same_as.json").read_text())["run"]
    return {"records": {"constrained": json.loads((folder / "eval-constrained.json").read_text())["records"]}}


flips = 0
print("strategy | metric | diff | summary.json interval (per-seed draw) | crossed draw | resolved: then / now")
print("---|---|---|---|---|---")
for strategy in summary["strategies"][1:]:
    mine = [run(f"{strategy.replace(':', '').replace('->', 'to')}-seed{s}") for s in summary["seeds"]]
    base = [run(f"{summary['baseline']}-seed{s}") for s in summary["seeds"]]
    for key, cell in summary["table"][strategy].items():
        if not key.startswith("constrained/") or not (cell.get("paired") or {}).get("low") is not None:
            continue
        old = cell["paired"]
        new = paired_eval(mine, base, "constrained", key.split("/", 1)[1])
        flips += old["resolved"] != new.resolved
        print(f"{strategy} | {key} | {100 * new.diff:+.1f} | [{100 * old['low']:+.1f}, {100 * old['high']:+.1f}] | "
              f"[{100 * new.low:+.1f}, {100 * new.high:+.1f}] | {old['resolved']} / {new.resolved}")
print(f"\nverdicts that changed: {flips}")
