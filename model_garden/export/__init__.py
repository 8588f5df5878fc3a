"""Export a training run as a model that loads anywhere, with its reply schema beside it.

``export(run, out, format)`` writes one of:

* ``merged``: base plus adapter in safetensors at ``dtype`` (default bfloat16), with the
  tokenizer or processor, loadable by ``AutoModelForCausalLM`` /
  ``AutoModelForImageTextToText`` and by vLLM;
* ``onnx``: ONNX Runtime GenAI's model builder on the merged weights, ``quantize`` int8
  (default), int4 or fp32, for CPU and edge serving (``model_garden.inference.engines``);
* ``gguf``: llama.cpp's own ``convert_hf_to_gguf.py`` on the merged weights (q8_0 by
  default, or f32/f16/bf16 through ``dtype``), for llama.cpp and Ollama.

Each folder also gets ``schema.json``: the reply JSON schema (``--schema``, else the run's
own ``schema.json``, else the one its training dataset carries) with the decoding layout as
its ``x-guidance`` options, so every llguidance engine decodes the trained layout. A model
trained with keys masked must never be served without it. A run's ``calibration.json``
(``model-garden calibrate``) is copied too: ``predict`` maps confidences with it.

Try it: ``model-garden export smollm2-135m --out /tmp/smollm2-onnx --format onnx``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from model_garden.data.schema import dataset_schema, load_schema, record_schema
from model_garden.data.sources import open_source
from model_garden.export.llama_cpp import convert_gguf
from model_garden.export.onnx_genai import build_onnx
from model_garden.grammar import with_guidance
from model_garden.inference.calibration_map import CALIBRATION_FILE
from model_garden.inference.loading import load_for_inference

FORMATS = ("merged", "onnx", "gguf")
DTYPES = ("bfloat16", "float16", "float32")
ONNX_PRECISIONS = ("int8", "int4", "fp32")
GGUF_QUANTS = ("q8_0",)
GGUF_TYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
SCHEMA_FILE = "schema.json"


def run_schema(run: str | Path, explicit: str | Path | None = None) -> dict[str, Any] | None:
    """The reply schema of a run, found as training found it: ``explicit``, else
    ``RUN/schema.json``, else its ``config.yaml``'s ``mask.schema`` file, else the
    ``schema.json`` beside its ``data.dataset``, else the one its first record carries;
    ``None`` when there is none (or ``run`` is not a training folder)."""
    if explicit is not None:
        return load_schema(explicit)
    run = Path(run).expanduser()
    if (run / SCHEMA_FILE).is_file():
        return load_schema(run / SCHEMA_FILE)
    config = run / "config.yaml"
    if not config.is_file():
        return None
    options = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    data, mask = options.get("data") or {}, options.get("mask") or {}
    for kind, named in (("schema file", mask.get("schema")), ("dataset", data.get("dataset"))):
        if named and not Path(named).expanduser().exists():
            raise FileNotFoundError(f"{config} names the {kind} {named}, which is not there to take the reply schema from; pass --schema FILE")
    if mask.get("schema"):
        return load_schema(mask["schema"])
    if not data.get("dataset"):
        return None
    found = dataset_schema(data["dataset"])
    if found is None:
        source = open_source(data["dataset"], format=data.get("data_format", "auto"), split=data.get("data_split", "train"))
        found = record_schema(source.sample(0)) if len(source) else None
    return found


def _options(format: str, dtype: str | None, quantize: str | None) -> tuple[str | None, str | None]:
    """Check the flags for a format and fill in its defaults: ``(dtype, quantize)``."""
    if format not in FORMATS:
        raise ValueError(f"--format {format}: choose one of {', '.join(FORMATS)}")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    if format == "merged":
        if quantize is not None:
            raise ValueError("--quantize applies to --format onnx (int8|int4|fp32) and gguf (q8_0); a merged model takes --dtype")
        return dtype or "bfloat16", None
    if format == "onnx":
        if dtype is not None:
            raise ValueError("--dtype does not apply to --format onnx; its precision is --quantize int8|int4|fp32")
        if quantize not in (None, *ONNX_PRECISIONS):
            raise ValueError(f"--quantize {quantize}: --format onnx takes {', '.join(ONNX_PRECISIONS)}")
        return None, quantize or "int8"
    if quantize not in (None, *GGUF_QUANTS):
        raise ValueError(f"--quantize {quantize}: --format gguf takes {' or '.join(GGUF_QUANTS)} (4-bit GGUF needs llama.cpp's compiled llama-quantize)")
    if dtype is not None and quantize is not None:
        raise ValueError("--format gguf takes --dtype (float32/float16/bfloat16 weights) or --quantize q8_0, not both")
    return dtype, quantize or (None if dtype else "q8_0")


def save_merged(run: str | Path, out: Path, dtype: str) -> bool:
    """Merge a run's adapter into its base and save it (safetensors at ``dtype``) with its
    tokenizer or processor. Returns whether it is a vision-language model."""
    model, processing = load_for_inference(run)
    model = model.to(getattr(torch, dtype))
    model.save_pretrained(out)
    processing.save_pretrained(out)
    return hasattr(model.config, "vision_config") or hasattr(model.config, "vision_start_token_id")


def export(
    run: str | Path,
    out: str | Path,
    format: str = "merged",
    *,
    dtype: str | None = None,
    quantize: str | None = None,
    schema: str | Path | None = None,
    llama_cpp: str | Path | None = None,
) -> Path:
    """Export a run (or any model ``predict --model`` takes) to ``out``.

    Args:
        run: Training output folder (a LoRA adapter is merged into its base), Hugging Face
            model folder, or ``--base-model`` value.
        out: The folder to write; it must not exist or be empty.
        format: ``merged``, ``onnx`` or ``gguf``.
        dtype: Weights of a merged model (bfloat16, float16, float32) or a GGUF file.
        quantize: ``int8`` (default), ``int4`` or ``fp32`` for ONNX, ``q8_0`` for GGUF.
        schema: A JSON schema file for the replies; default the run's own.
        llama_cpp: A llama.cpp checkout whose ``convert_hf_to_gguf.py`` to use for GGUF;
            default the one in the pinned ``llama-cpp-python`` source distribution.

    Returns:
        ``out``.
    """
    dtype, quantize = _options(format, dtype, quantize)
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} is not an empty folder; choose a new one")
    reply_schema = run_schema(run, schema)  # before the slow part: a missing dataset fails fast
    out.mkdir(parents=True, exist_ok=True)
    try:
        if format == "merged":
            save_merged(run, out, dtype)
        else:
            with tempfile.TemporaryDirectory(prefix=".merged-", dir=out.parent) as tmp:
                # The converters read float32 weights and quantize them themselves.
                if save_merged(run, Path(tmp), "float32"):
                    raise ValueError(f"--format {format} exports text models only; export a vision-language model with --format merged")
                if format == "onnx":
                    build_onnx(Path(tmp), out, quantize)
                else:
                    convert_gguf(Path(tmp), out, quantize or GGUF_TYPES[dtype], llama_cpp)
        if reply_schema is not None:
            (out / SCHEMA_FILE).write_text(json.dumps(with_guidance(reply_schema), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        if (Path(run) / CALIBRATION_FILE).is_file():  # predict applies it to this export as to the run
            shutil.copyfile(Path(run) / CALIBRATION_FILE, out / CALIBRATION_FILE)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # no half-written model left to be served
        raise
    return out
