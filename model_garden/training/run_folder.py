"""A run owns its output folder: no silent reuse, no resume of another run.

* ``claim`` first locks the folder for the run's whole life (``model_garden.locks``): a
  second process is refused with the holder's pid, host and start time, whatever its
  flags, and a lock left by a killed process is taken over. It then refuses a folder
  that already holds something unless ``--resume`` (continue the run that is there) or
  ``--overwrite`` (replace it: allowed only for a folder that holds a model-garden run,
  never for an arbitrary non-empty folder). ``--resume auto`` continues the run if it
  has a complete checkpoint and starts it otherwise (a requeued scheduler job).
* ``check_resume`` compares the saved ``config.yaml`` and mask fingerprint with the new
  run's and refuses with the list of differences; options that cannot change what was
  already trained (``SAFE_TO_CHANGE``, e.g. the number of steps) may differ when
  ``--allow-changes`` names them, as Hugging Face Trainer lets ``max_steps`` grow.
* ``release`` removes a folder this run created when it fails before training starts,
  so a failed run leaves nothing behind.

Try it: ``model-garden train --dataset model_garden/assets/example.jsonl --max-steps 1 --output /tmp/r``
twice: the second is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import yaml

from model_garden.locks import FileLock
from model_garden.masking.scan_report import fingerprint_version
from model_garden.options import ConfigError, flag
from model_garden.training.checkpoints import latest_complete_checkpoint
from model_garden.training.config import SAFE_TO_CHANGE, TrainConfig

# Bookkeeping: never compared.
_IGNORED = frozenset({"resume", "overwrite", "allow_changes", "output", "report_to", "logging_steps", "dataloader_workers", "num_proc", "scan_cache"})
LOCK_FILE = ".model-garden.lock"
RUN_MARKERS = ("config.yaml", "mask_stats.json", "checkpoints", "adapter_config.json", "metrics.json")


def claim(cfg: TrainConfig) -> tuple[bool, AbstractContextManager, TrainConfig]:
    """Lock the output folder and make it this run's. In a data-parallel job only the
    first process (``RANK`` 0) locks and prepares the folder: the others are the same run.

    Returns:
        Whether the folder was created here (see ``release``), the lock (held: leave its
        ``with`` block when the run ends), and the configuration with ``--resume auto``
        resolved to ``latest`` or a fresh start.

    Raises:
        InUseError: another live process holds the folder.
        ConfigError: the folder is a file, holds another run (without ``--resume`` or
            ``--overwrite``), or is a non-empty folder that holds no run.
    """
    out = Path(cfg.run.output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {out} is a file; give a folder")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if os.environ.get("RANK", "0") != "0":
        return created, nullcontext(), _resolve_auto(cfg, out)
    lock = FileLock(out / LOCK_FILE, f"--output {out}").acquire()
    try:
        cfg = _resolve_auto(cfg, out)
        _take(cfg, out)
    except BaseException:
        lock.release()
        raise
    return created, lock, cfg


def _resolve_auto(cfg: TrainConfig, out: Path) -> TrainConfig:
    """``--resume auto``: ``latest`` when a complete checkpoint is there, else a fresh
    start that replaces an unfinished run's files (``check_resume`` still compares the
    options of a continued run)."""
    if cfg.run.resume != "auto":
        return cfg
    if latest_complete_checkpoint(out / "checkpoints")[0] is not None:
        return cfg.replace(resume="latest")
    return cfg.replace(resume=None, overwrite=True)


def _take(cfg: TrainConfig, out: Path) -> None:
    contents = [p.name for p in out.iterdir() if p.name != LOCK_FILE]
    is_run = any(name in contents for name in RUN_MARKERS)
    if not contents or cfg.run.resume:
        return
    if cfg.run.overwrite and is_run:
        for item in out.iterdir():
            if item.name != LOCK_FILE:
                shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
        return
    if is_run:
        raise ConfigError(
            f"--output {out} already holds a run; pass --resume latest to continue it, --overwrite to replace it, or choose another --output"
        )
    raise ConfigError(f"--output {out} is not empty and holds no model-garden run ({', '.join(sorted(contents)[:5])}); choose an empty or new folder")


def release(out: Path, created: bool) -> None:
    """Remove the output folder of a run that failed before training started, if this
    run created it (a folder the user had is never removed)."""
    if created and out.is_dir():
        shutil.rmtree(out, ignore_errors=True)


def _differences(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (saved.get(k), v) for k, v in now.items() if k not in _IGNORED and k in saved and saved[k] != v}


def check_resume(cfg: TrainConfig, out: Path, fingerprint: Callable[[int], str]) -> list[str]:
    """Refuse to resume a run whose options or data differ from the saved ones; returns
    the allowed changes (for a warning). ``fingerprint(version)``: the new data's mask
    fingerprint in the version the run folder stored.

    Raises:
        ConfigError: listing the differences and the flag that would allow the safe ones.
    """
    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        raise ConfigError(f"--resume: {out} holds no config.yaml, so there is no run to continue")
    saved_groups = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    saved = {k: v for group in saved_groups.values() if isinstance(group, dict) for k, v in group.items()}
    diffs = _differences(saved, cfg.flat())
    stats_path = out / "mask_stats.json"
    if stats_path.is_file():
        before = json.loads(stats_path.read_text(encoding="utf-8")).get("mask_fingerprint")
        now = before and fingerprint(fingerprint_version(before))
        if before and before != now:
            diffs["training data (mask fingerprint)"] = (before[:12], now[:12])
    allowed = set(cfg.run.allow_changes)
    refused = {k: v for k, v in diffs.items() if k not in allowed or k not in SAFE_TO_CHANGE}
    if refused:
        listed = "; ".join(f"{flag(k) if not k.startswith('training') else k}: {a!r} then, {b!r} now" for k, (a, b) in refused.items())
        safe = sorted(k for k in refused if k in SAFE_TO_CHANGE)
        hint = f" (--allow-changes {','.join(safe)} accepts {'that' if len(safe) == 1 else 'those'})" if safe else ""
        raise ConfigError(f"--resume: this run differs from the one in {out}: {listed}{hint}; use a new --output for a different run")
    return [f"{flag(k)}: {a!r} -> {b!r}" for k, (a, b) in diffs.items()]
