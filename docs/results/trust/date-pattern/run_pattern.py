"""The trust study's amended third decoding (docs/results/trust.md, 14:09 amendment):
grounded with the date pattern in the decoder's schema, for finished runs of the 1-epoch
arm; the same steps compare takes for a decoding (calibration split, calibrate, test, evaluate).
Usage: run_pattern.py SEED [SEED ...]"""
import json, sys
from pathlib import Path
from model_garden.evaluation import evaluate_files
from model_garden.evaluation.calibration import confidence_metrics, evaluate_confidence, fit_calibration
from model_garden.inference.predict import predict

DATA = Path("/work/data/sroie-calib")
HERE = Path("/work/study/trust-pattern")
SCHEMA = HERE / "schema-date-pattern.json"
for seed in sys.argv[1:]:
    run = Path(f"/work/study/trust/runs/moderate@0.1-seed{seed}")
    out = HERE / run.name
    out.mkdir(exist_ok=True)
    report = out / "eval-grounded-pattern.json"
    if report.is_file():
        continue
    calib_preds, cmap = out / "preds-calibration-grounded-pattern.jsonl", out / "calibration-grounded-pattern.json"
    common = dict(schema=SCHEMA, grounded=True, batch_size=10, max_new_tokens=128, threads=2)
    if not cmap.is_file():
        predict(run, DATA / "calib.jsonl", calib_preds, **common)
        fit_calibration(calib_preds, DATA / "calib.jsonl").save(cmap)
    preds = out / "preds-grounded-pattern.jsonl"
    stats = predict(run, DATA / "test.jsonl", preds, calibration=cmap, **common)
    evaluated = evaluate_files(preds, DATA / "test.jsonl")
    evaluated["confidence"] = evaluate_confidence(preds, evaluated)
    evaluated["metrics"] |= confidence_metrics(evaluated)
    evaluated["predict"] = stats
    report.write_text(json.dumps(evaluated, indent=2, ensure_ascii=False), encoding="utf-8")
    m = evaluated["metrics"]
    print(run.name, "field accuracy", m["field_accuracy"], "seconds", stats["seconds"], flush=True)
