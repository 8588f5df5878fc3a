"""`+2ep` seeds 1 and 2 decoded again with the plan's schema (no date pattern), both
decodings, as every run of the 1-epoch arm and `+2ep`/`+3ep` seed 0 were (docs/results/trust.md,
note of 2026-12-06 10:11): the same steps compare takes for a decoding (calibration split,
calibrate, test, evaluate), run with the study's frozen code (b637d70).
Usage: run_nopattern.py SEED [SEED ...]   (schema-plan.json: sroie-calib/schema.json without the date's pattern)"""
import json, sys
from pathlib import Path
from model_garden.evaluation import evaluate_files
from model_garden.evaluation.calibration import confidence_metrics, evaluate_confidence, fit_calibration
from model_garden.inference.predict import predict

DATA = Path("/work/data/sroie-calib")
HERE = Path("/work/study/trust-nopattern")
SCHEMA = HERE / "schema-plan.json"
for seed in sys.argv[1:]:
    run = Path(f"/work/study/trust/runs/moderate@0.1+2ep-seed{seed}")
    out = HERE / run.name
    out.mkdir(exist_ok=True)
    for decoding in ("constrained", "grounded"):
        report = out / f"eval-{decoding}.json"
        if report.is_file():
            continue
        calib_preds, cmap = out / f"preds-calibration-{decoding}.jsonl", out / f"calibration-{decoding}.json"
        common = dict(schema=SCHEMA, grounded=decoding == "grounded", batch_size=10, max_new_tokens=128, threads=2)
        if not cmap.is_file():
            predict(run, DATA / "calib.jsonl", calib_preds, **common)
            fit_calibration(calib_preds, DATA / "calib.jsonl").save(cmap)
        preds = out / f"preds-{decoding}.jsonl"
        stats = predict(run, DATA / "test.jsonl", preds, calibration=cmap, **common)
        evaluated = evaluate_files(preds, DATA / "test.jsonl")
        evaluated["confidence"] = evaluate_confidence(preds, evaluated)
        evaluated["metrics"] |= confidence_metrics(evaluated)
        evaluated["predict"] = stats
        report.write_text(json.dumps(evaluated, indent=2, ensure_ascii=False), encoding="utf-8")
        print(run.name, decoding, "field accuracy", evaluated["metrics"]["field_accuracy"], "seconds", stats["seconds"], flush=True)
