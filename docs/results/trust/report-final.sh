#!/bin/bash
# The study's final report: `compare --report-only` (main's code, crossed bootstrap) over the
# committed records of all nine SROIE runs, with `+2ep` seeds 1-2's with-pattern decodings
# replaced by their decodings under the plan's schema (epochs/nopattern/, trust.md 10:11 note).
# Usage (from the repo's root): bash docs/results/trust/report-final.sh OUT [more compare flags, e.g. --cluster-by /company]
set -e
OUT=$1
T=docs/results/trust
# A new folder only: the report is written beside copies of the records, never over a folder one had.
[ -n "$OUT" ] || { echo "usage: report-final.sh OUT [compare flags]" >&2; exit 2; }
[ ! -e "$OUT" ] || { echo "report-final.sh: $OUT exists; give a new folder" >&2; exit 2; }
mkdir -p "$OUT/runs"
cp -r $T/runs/* "$OUT/runs/"
for s in 1 2; do cp $T/epochs/nopattern/moderate@0.1+2ep-seed$s/*.json "$OUT/runs/moderate@0.1+2ep-seed$s/"; done
.venv/bin/model-garden compare --dataset /work/data/sroie-calib/train.jsonl --eval-dataset /work/data/sroie-calib/calib.jsonl \
    --test-dataset /work/data/sroie-calib/test.jsonl --calibration-dataset /work/data/sroie-calib/calib.jsonl \
    --strategies moderate@0.1,moderate@0.1+2ep,moderate@0.1+3ep --seeds 0,1,2 --batch-size 4 --lr 5e-4 \
    --max-length 1280 --group-by-length --eval-steps 25 --save-steps 25 --eval-generate 50 \
    --metric-for-best field_accuracy --early-stopping-patience 2 --decodings constrained,grounded \
    --max-new-tokens 128 --predict-batch-size 10 --out "$OUT" --report-only "${@:2}"
