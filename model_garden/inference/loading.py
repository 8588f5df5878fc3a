"""Which model decodes, and through which engine: a training output folder (a LoRA
adapter merged into its base model), a Hugging Face model folder or a ``--base-model``
value for ``hf``; an exported folder for ``onnxruntime-genai`` (``export --format onnx``)
and ``vllm`` (``--format merged``). Each engine is a ``Generate`` function from encoded
prompts, their schemas (or grammars) and a budget to ``Reply`` objects, so
``predict.predict_samples`` has one batch loop for all of them.

Try it: ``python -c "from model_garden.inference.loading import load_for_inference; print(load_for_inference('smollm2')[0].config.model_type)"``
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoTokenizer

from model_garden.inference.confidence import Reply
from model_garden.inference.engines import generate_ort, generate_vllm
from model_garden.inference.generate import generate_batch
from model_garden.models import is_vision_model, load_model, load_processing, peft_quietly, resolve_model, text_tokenizer

ENGINES = ("hf", "onnxruntime-genai", "vllm")
# Weights' precision for the hf engine. float32 gives the replies the study figures were
# measured with; bfloat16 trades identical replies for speed where the CPU has bf16 matrix
# units (AMX) or on a GPU (docs/benchmarks.md, "bfloat16 on the hf engine").
DTYPES = ("float32", "bfloat16")
Generate = Callable[[list[dict[str, Any]], list[dict | str | None] | None, int], list[Reply]]


def load_for_inference(spec: str | Path) -> tuple[Any, Any]:
    """Load a model and its tokenizer or processor for generation.

    Args:
        spec: A folder holding a PEFT adapter (``adapter_config.json``; its base model may
            be a folder, a ``--base-model`` alias or the public id of an embedded model), a
            Hugging Face model folder, or any ``--base-model`` value.

    Returns:
        ``(model, tokenizer_or_processor)``, the model in eval mode with any adapter merged.
    """
    path = Path(spec).expanduser()
    adapter = path / "adapter_config.json"
    if not adapter.is_file():
        resolved = resolve_model(spec, flag="--model")
        vision = is_vision_model(resolved)
        return load_model(resolved, vision=vision).eval(), load_processing(resolved, vision=vision)
    base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter}: no base_model_name_or_path, so the base model is unknown")
    base = resolve_model(base)
    vision = is_vision_model(base)
    # Training saves the tokenizer or processor beside the adapter; otherwise use the base's.
    has_own = any((path / f).is_file() for f in ("tokenizer_config.json", "processor_config.json"))
    processing = _load_local(path, vision) if has_own else load_processing(base, vision=vision)
    model = load_model(base, vision=vision)
    vocab = len(text_tokenizer(processing))
    if vocab > model.get_input_embeddings().weight.shape[0]:
        # Tokens added in training (temporal tokens) need their rows before the adapter fills them.
        model.resize_token_embeddings(vocab, mean_resizing=False)
    with peft_quietly():
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    return model.eval(), processing


def _load_local(path: Path, vision: bool) -> Any:
    # load_processing() resolves --base-model values, which needs a config.json this folder lacks.
    if vision:
        from model_garden.vision_compat import load_vision_processor  # imports torch's image stack; vision only

        return load_vision_processor(path)
    return AutoTokenizer.from_pretrained(path)


def hf_generator(model: Any, processing: Any) -> Generate:
    """transformers' ``generate`` as a prompt-batch function."""
    return lambda prompts, schemas, budget: generate_batch(model, processing, prompts, schemas=schemas, max_new_tokens=budget)


def engine_generator(engine: str, model: str | Path, threads: int, dtype: str = "float32") -> tuple[Generate, Any]:
    """The decoding function of ``--engine`` and the tokenizer or processor to encode for
    it. Every engine gets the same prompt ids and the same schema (llguidance with the
    same separators inside each). ``dtype`` is the ``hf`` engine's weights' precision
    (``DTYPES``); an export's is fixed when it is made (``export --quantize``)."""
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    if engine == "hf":
        net, processing = load_for_inference(model)
        if dtype == "bfloat16":
            net = net.to(torch.bfloat16)  # the logits processors still see float32 scores: generate casts them
        return hf_generator(net, processing), processing
    if engine not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if dtype != "float32":
        raise ValueError(f"--dtype {dtype} is for --engine hf; an export's precision is chosen when it is made (model-garden export --quantize)")
    folder = Path(model).expanduser()
    fmt, marker = ("onnx", "genai_config.json") if engine == "onnxruntime-genai" else ("merged", "config.json")
    if not (folder / marker).is_file() or not (folder / "tokenizer_config.json").is_file():
        raise ValueError(f"--engine {engine} takes an exported folder (model-garden export RUN --format {fmt}); {folder} is not one")
    tokenizer = AutoTokenizer.from_pretrained(folder)

    def generate(prompts: list[dict[str, Any]], schemas: list[dict | str | None] | None, budget: int) -> list[Reply]:
        if any(len(p) > 1 for p in prompts):
            raise ValueError(f"--engine {engine} decodes text prompts only; use --engine hf for images and videos")
        ids = [p["input_ids"] for p in prompts]
        if engine == "onnxruntime-genai":
            return generate_ort(folder, ids, schemas, budget, threads=threads)
        return generate_vllm(folder, ids, schemas, budget)

    return generate, tokenizer
