"""What is left: the wrong test fields of every finished run of the trust study, by kind
(``model_garden.evaluation.errors``), per decoding. Reads the study's working folder,
where the predictions are (they stay out of the repo: largely the receipts' text).

Added on 2026-12-06 after the runs, to say where the errors are; it chooses nothing.
SROIE-specific, one extra column: of the ``boundary`` totals, those that differ from the
gold only by its "RM" prefix (the gold writes "RM 12.50" on 12 test receipts, 5% of
training ones, and the receipt prints it; the model answers "12.50").

Run: ``.venv/bin/python docs/results/trust/error-kinds/error_kinds.py``: it appends to
``error_kinds.txt`` the runs and decodings not yet in it. Appends, not rewrites: the study
folder of the runs made before 2026-12-06 05:00 UTC was lost with its machine, so their
rows stay as they were computed then.
"""

from __future__ import annotations

import json
from pathlib import Path

from model_garden.evaluation import evaluate_files
from model_garden.evaluation.errors import KINDS

STUDY = Path("/work/study")
TEST = "/work/data/sroie-calib/test.jsonl"
RUNS = [(STUDY / "trust/runs", d) for d in ("constrained", "grounded")] + [(STUDY / "trust-pattern", "grounded-pattern")]


def rm_only(report: dict, preds: Path) -> int:
    """Totals judged ``boundary`` whose gold is the prediction with "RM" before it."""
    golds = [json.loads(json.loads(line)["messages"][-1]["content"]) for line in open(TEST, encoding="utf-8")]
    outputs = {json.loads(line)["line"]: json.loads(line)["output"] for line in open(preds, encoding="utf-8")}
    n = 0
    for line, wrong in zip(report["records"]["line"], report["errors"]["records"]):
        if wrong.get("total") == "boundary":
            gold, pred = golds[line - 1]["total"], json.loads(outputs[line])["total"]
            n += gold.upper().removeprefix("RM").strip() == (pred or "").strip()
    return n


OUT = Path(__file__).with_name("error_kinds.txt")
done = {tuple(line.split(" | ")[:2]) for line in OUT.read_text(encoding="utf-8").splitlines()} if OUT.is_file() else set()
with OUT.open("a", encoding="utf-8") as out:
    if not done:
        print("run | decoding | field accuracy | wrong | " + " | ".join(KINDS) + " | boundary totals: RM prefix only", file=out)
        print("---|---|---|---|" + "---|" * len(KINDS) + "---", file=out)
    for folder, decoding in RUNS:
        for run in sorted(p for p in folder.glob("*-seed*") if (p / f"preds-{decoding}.jsonl").is_file()):
            if (run.name, decoding) in done:
                continue
            preds = run / f"preds-{decoding}.jsonl"
            report = evaluate_files(preds, TEST)
            counts = report["errors"]["counts"]
            fields = report["metrics"]["fields"]
            print(f"{run.name} | {decoding} | {100 * report['metrics']['field_accuracy']:.2f}% | {sum(counts.values())} | "
                  + " | ".join(str(counts[k]) for k in KINDS) + f" | {rm_only(report, preds)}", file=out)
            per_field = {f: {k: v for k, v in c.items() if v} for f, c in report["errors"]["per_field"].items()}
            print(f"  per field: {json.dumps(per_field)} (of {fields} fields)", file=out)
