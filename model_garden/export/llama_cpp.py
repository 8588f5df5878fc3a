"""GGUF export with llama.cpp's own converter, ``convert_hf_to_gguf.py``.

The converter is not on the package index as a package of its own; it ships inside the
``llama-cpp-python`` source distribution (``vendor/llama.cpp``), next to the ``gguf-py``
library it is written against. On first use, pip downloads that source distribution
(pinned below, about 75 MB) and the converter, its ``conversion`` package and ``gguf-py``
are kept under ``$MODEL_GARDEN_CACHE/llama.cpp-convert-VERSION``; nothing is compiled.
A llama.cpp checkout can be used instead (``--llama-cpp DIR``).

The converter writes f32, f16, bf16 or q8_0 weights. Smaller quantizations (Q4_K_M, ...)
need llama.cpp's compiled ``llama-quantize``, which no package on the index provides.

Try it: ``python -m model_garden.export.llama_cpp HF_FOLDER OUT_DIR [q8_0]``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from filelock import FileLock

from model_garden.models import cache_dir

LLAMA_CPP_PYTHON = "0.3.36"
_VENDOR = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
# The converter imports its own gguf-py (put on sys.path by the script) and conversion package.
_KEEP = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")


def _fetch(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        sdists = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if done.returncode != 0 or not sdists:
            raise RuntimeError(
                f"could not download llama.cpp's converter ({' '.join(cmd[2:])}): {done.stderr.strip()[-500:]}; "
                "pass --llama-cpp DIR (a llama.cpp checkout) instead"
            )
        with tarfile.open(sdists[0]) as sdist:
            members = [m for m in sdist.getmembers() if m.name.startswith(_VENDOR) and m.name[len(_VENDOR):].startswith(_KEEP)]
            sdist.extractall(tmp, members=members, filter="data")
        shutil.move(str(Path(tmp) / _VENDOR), target)


def converter(llama_cpp: str | Path | None = None) -> Path:
    """The path of ``convert_hf_to_gguf.py``: in ``llama_cpp`` if given, else in the
    cached copy from the pinned ``llama-cpp-python`` source distribution (fetched once)."""
    if llama_cpp is not None:
        script = Path(llama_cpp).expanduser() / "convert_hf_to_gguf.py"
        if not script.is_file():
            raise FileNotFoundError(f"--llama-cpp {llama_cpp}: no convert_hf_to_gguf.py in that folder")
        return script
    target = cache_dir() / f"llama.cpp-convert-{LLAMA_CPP_PYTHON}"
    script = target / "convert_hf_to_gguf.py"
    if not script.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            if not script.is_file():
                _fetch(target)
    return script


def convert_gguf(model_dir: Path, out: Path, outtype: str, llama_cpp: str | Path | None = None) -> Path:
    """Convert a Hugging Face text-model folder to ``out/model-OUTTYPE.gguf``.

    Args:
        model_dir: Merged float32 weights, config and tokenizer.
        out: The folder to write the GGUF file into.
        outtype: ``f32``, ``f16``, ``bf16`` or ``q8_0``.
        llama_cpp: A llama.cpp checkout to take the converter from.

    Raises:
        RuntimeError: The converter failed; the message ends with its last lines of output.
    """
    target = out / f"model-{outtype}.gguf"
    cmd = [sys.executable, str(converter(llama_cpp)), str(model_dir), "--outtype", outtype, "--outfile", str(target)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"llama.cpp's convert_hf_to_gguf.py failed (exit {done.returncode}):\n{tail}")
    return target


if __name__ == "__main__":
    dest = Path(sys.argv[2])
    dest.mkdir(parents=True, exist_ok=True)
    print(convert_gguf(Path(sys.argv[1]), dest, sys.argv[3] if len(sys.argv) > 3 else "q8_0"))
