"""Build a test artefact once per machine and share it between test processes.

Tokenizers take seconds to build (the Qwen vocabulary has 151k entries, the
SentencePiece model is trained), so each is saved under
``model_garden.models.cache_dir() / "testing" / NAME`` the first time. A file lock keeps
parallel test processes (``pytest -n``) from building the same thing twice or reading a
half-written directory: the build goes to a temporary folder that is renamed into place.

Try it: ``python -m model_garden.testing.cache`` prints the folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

# Bump when a factory's output changes, so stale caches are not reused.
VERSION = 1


def testing_dir() -> Path:
    """The folder that holds cached test artefacts."""
    from model_garden.models import cache_dir

    return cache_dir() / "testing"


def cached_build(name: str, build: Callable[[Path], None]) -> Path:
    """Return ``testing_dir() / name-vVERSION``, calling ``build(folder)`` to fill it if absent.

    Args:
        name: The artefact's folder name.
        build: Writes the artefact into the empty folder it is given.

    Returns:
        The finished folder.
    """
    from filelock import FileLock

    target = testing_dir() / f"{name}-v{VERSION}"
    done = target / ".complete"
    if done.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if done.is_file():
            return target
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        tmp.mkdir()
        build(tmp)
        (tmp / ".complete").touch()
        tmp.rename(target)
    return target


if __name__ == "__main__":
    print(testing_dir())
