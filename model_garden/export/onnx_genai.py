"""ONNX export through ONNX Runtime GenAI's model builder.

The builder (``python -m onnxruntime_genai.models.builder``) turns a Hugging Face folder
into ``model.onnx`` + ``model.onnx.data``, ``genai_config.json`` and the tokenizer files,
for the CPU execution provider at int8 or int4 (weight-only, blocks of 32) or fp32. It
runs in a subprocess: it puts its own folder on ``sys.path`` and prints progress bars.

Try it: ``python -m model_garden.export.onnx_genai HF_FOLDER OUT [int8|int4|fp32]``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

from model_garden.extras import MissingExtra

# Import names of what the builder needs beyond model-garden's own dependencies.
_BUILDER_MODULES = ("onnxruntime_genai", "onnxruntime", "onnx", "onnx_ir")
# int4 is k-quant with the output layer and the most sensitive layers at int8 (llama.cpp's
# mixed recipe). The builder's default int4 (round-to-nearest everywhere) decoded 2 of 30
# SROIE receipts as fp32 did with a fine-tuned SmolLM2-135M, and lost 29 of 74 points of
# field accuracy; this recipe 8 of 30 and 11 points; int8 26 of 30 and none
# (docs/benchmarks.md).
_BUILDER_OPTIONS = {"int4": ["--extra_options", "algo_config=k_quant_mixed"]}


def build_onnx(model_dir: Path, out: Path, precision: str) -> None:
    """Build an ONNX Runtime GenAI model for CPU from a Hugging Face text-model folder.

    Args:
        model_dir: Merged float32 weights, config and tokenizer.
        out: Where the ONNX model, ``genai_config.json`` and tokenizer files go.
        precision: ``int8``, ``int4`` or ``fp32``.

    Raises:
        ImportError: The ``onnx`` extra is not installed.
        RuntimeError: The builder failed; the message ends with its last lines of output.
    """
    missing = [m for m in _BUILDER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(f"--format onnx needs {', '.join(missing)}: pip install 'model-garden[onnx]'")
    with tempfile.TemporaryDirectory(prefix=".onnx-cache-", dir=out.parent) as cache:
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder",
               "-i", str(model_dir), "-o", str(out), "-p", precision, "-e", "cpu", "-c", cache, *_BUILDER_OPTIONS.get(precision, [])]
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"ONNX Runtime GenAI's model builder failed (exit {done.returncode}):\n{tail}")


if __name__ == "__main__":
    build_onnx(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "int8")
    print(sorted(p.name for p in Path(sys.argv[2]).iterdir()))
