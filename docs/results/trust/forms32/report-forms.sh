#!/bin/bash
# compare --report-only with main's current code (crossed bootstrap) over the forms part's
# finished runs in /work/study/trust-forms32 (predictions kept there). Usage: report-forms.sh OUT
set -e
OUT=$1; shift
rm -rf "$OUT"; mkdir -p "$OUT/runs"
for d in /work/study/trust-forms32/runs/*/; do
  n=$(basename "$d"); cp -r "$d" "$OUT/runs/$n"; rm -rf "$OUT/runs/$n/checkpoints"
done
cd /work/main
.venv/bin/model-garden compare --dataset /work/study/forms/text/train32.jsonl --eval-dataset /work/study/forms/text/val.jsonl \
    --test-dataset /work/study/forms/text/test.jsonl --calibration-dataset /work/study/forms/text/val.jsonl \
    --strategies moderate@0.1,moderate@0.1+2ep,moderate@0.1+3ep --seeds 0,1,2 --max-length 1280 --group-by-length \
    --eval-steps 4 --save-steps 4 --eval-generate 28 --metric-for-best field_accuracy --early-stopping-patience 2 \
    --decodings constrained,grounded --max-new-tokens 320 --predict-batch-size 7 --out "$OUT" --report-only "$@"
