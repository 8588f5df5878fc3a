"""Crash-safe checkpoints: each one is written aside and renamed into place when complete.

transformers' ``Trainer`` writes ``checkpoint-N`` file by file, so a crash or a full disk
in the middle leaves a folder that looks like the newest checkpoint and cannot be resumed.
Here, as rsync and git do for files:

* ``SelectiveLossSFTTrainer`` saves a checkpoint into ``.tmp-checkpoint-N/checkpoint-N``
  beside the others; ``publish`` fsyncs its files and folders, renames it to
  ``checkpoint-N`` and fsyncs the parent folder, so ``checkpoint-N`` exists only complete.
* ``latest_complete_checkpoint`` is what ``--resume latest`` continues from: the newest
  ``checkpoint-N`` with a readable ``trainer_state.json`` and weights. It names the
  incomplete ones it passed over (older versions wrote in place) and ignores ``.tmp-*``.
* A write that fails (disk full, I/O error) becomes a ``CheckpointError`` saying that the
  previous checkpoint is intact; the staging folder is removed.

Test hook: ``MODEL_GARDEN_FAULT=save:<step>:<point>`` makes the checkpoint save of
optimizer step ``<step>`` kill its own process (SIGKILL) at ``<point>``: ``start`` (staging
folder made, nothing written), ``after_weights`` (weights written, optimizer not),
``before_rename`` (complete and fsynced, not renamed) or ``after_rename`` (renamed; staging
folder and old checkpoints not cleaned up). ``enospc`` raises ``OSError(ENOSPC)`` after
the weights instead, as a full disk would. Only tests set it (tests/test_faults.py).

Try it (killed at step 2, then continued from ``checkpoint-1``)::

    MODEL_GARDEN_FAULT=save:2:after_weights model-garden train --dataset model_garden/assets/example.jsonl \\
        --max-steps 3 --save-steps 1 --output /tmp/r
    model-garden train --dataset model_garden/assets/example.jsonl --max-steps 3 --save-steps 1 --output /tmp/r --resume latest
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

TRAINER_STATE = "trainer_state.json"
STAGING_PREFIX = ".tmp-"
FAULT_ENV = "MODEL_GARDEN_FAULT"
KILL_POINTS = ("start", "after_weights", "before_rename", "after_rename")
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_FAULT = re.compile(rf"save:(\d+):({'|'.join(KILL_POINTS)}|enospc)")
# Weights as Trainer saves them: full or sharded models, LoRA adapters, FSDP, DeepSpeed.
_WEIGHT_PREFIXES = ("model", "adapter_model", "pytorch_model", "global_step")


class CheckpointError(OSError):
    """A checkpoint could not be written (``filename``: its folder; ``errno``: the cause's,
    ENOSPC for a full disk); the checkpoints saved before it are intact."""

    self_explaining = True  # the CLI prints this message as it is (it says what to do)

    def __init__(self, folder: Path, code: int, reason: str):
        previous, _ = latest_complete_checkpoint(folder.parent)
        then = (
            f"the previous checkpoint ({previous.name}) is intact: continue from it with --resume latest"
            if previous is not None
            else "no checkpoint was saved before it: start again with --overwrite"
        )
        super().__init__(code, f"could not save the checkpoint ({reason}); {then}", str(folder))

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def incomplete_reason(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from, or None when it is a complete checkpoint.
    Trainer writes ``trainer_state.json`` last, so a readable one means the rest is there."""
    try:
        json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {TRAINER_STATE}"
    except (OSError, ValueError):
        return f"unreadable {TRAINER_STATE}"
    if not any(p.name.startswith(_WEIGHT_PREFIXES) for p in folder.iterdir()):
        return "no weights"
    return None


def latest_complete_checkpoint(folder: str | Path) -> tuple[Path | None, list[str]]:
    """The newest complete ``checkpoint-N`` in ``folder`` (None if there is none or no
    folder), and the newer incomplete ones passed over, as ``"<path> (<why>)"`` lines for a
    warning. Staging folders (``.tmp-*``) are not checkpoints and are not listed."""
    folder = Path(folder)
    if not folder.is_dir():
        return None, []
    numbered = sorted(((int(m[1]), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))), reverse=True)
    skipped = []
    for _, path in numbered:
        why = incomplete_reason(path)
        if why is None:
            return path, skipped
        skipped.append(f"{path} ({why})")
    return None, skipped


def staging_folder(run_dir: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` is written before it is renamed into ``run_dir``."""
    return run_dir / f"{STAGING_PREFIX}{PREFIX_CHECKPOINT_DIR}-{step}"


def clear_staging(run_dir: Path) -> None:
    """Remove the staging folders that saves killed before their end left in ``run_dir``."""
    for leftover in run_dir.glob(f"{STAGING_PREFIX}{PREFIX_CHECKPOINT_DIR}-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(staging: Path, final: Path, step: int) -> None:
    """Move the complete checkpoint ``staging/<final.name>`` to ``final`` in one rename,
    once its files and folders are on the disk, then remove ``staging``."""
    staged = staging / final.name
    for folder, _, files in os.walk(staged, topdown=False):
        for name in files:
            _fsync(Path(folder, name))
        _fsync(Path(folder))  # the folder's entries, so the files can be found after a power loss
    inject_fault("before_rename", step)
    if final.exists():  # the same step saved again: resumed from an earlier checkpoint, or an incomplete one
        final.rename(staging / "replaced")
    staged.rename(final)
    _fsync(final.parent)  # the rename itself
    inject_fault("after_rename", step)
    shutil.rmtree(staging)


def write_failure(folder: Path, err: BaseException) -> CheckpointError | None:
    """``err`` as a ``CheckpointError`` for ``folder`` when it is a failed write, else None.

    Not every writer raises OSError: the Rust ones (safetensors, tokenizers) raise their
    own exceptions quoting "(os error N)", torch's zip writer a RuntimeError without errno."""
    text = str(err)
    if isinstance(err, OSError):
        return CheckpointError(folder, err.errno or errno.EIO, err.strerror or text)
    if m := re.search(r"\(os error (\d+)\)", text):
        return CheckpointError(folder, int(m[1]), os.strerror(int(m[1])))
    if isinstance(err, RuntimeError) and ("PytorchStreamWriter" in text or "inline_container" in text):
        return CheckpointError(folder, errno.EIO, "a write failed; is the disk full?")
    return None


def inject_fault(point: str, step: int) -> None:
    """The test hook of the module docstring: act if ``MODEL_GARDEN_FAULT`` names this
    ``point`` (``after_weights`` also for ``enospc``) of the save of ``step``."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    match = _FAULT.fullmatch(spec)
    if match is None:
        raise ValueError(f"{FAULT_ENV}={spec}: expected save:<step>:<point>, the point one of {', '.join(KILL_POINTS)}, enospc")
    if int(match[1]) != step:
        return
    if match[2] == point:
        os.kill(os.getpid(), signal.SIGKILL)
    if match[2] == "enospc" and point == "after_weights":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
