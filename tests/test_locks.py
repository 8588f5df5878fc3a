"""One writer per run folder and per predictions file: a second process is refused with
the holder named, a killed holder's lock is taken over, and ``--resume auto`` continues
or starts a run.

Run: ``.venv/bin/python -m pytest tests/test_locks.py -q``
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from transformers import TrainerCallback

from model_garden.locks import FileLock, InUseError
from model_garden.training.run import train
from test_training import InterruptAt, _cfg, _dataset

REPO = Path(__file__).resolve().parents[1]


def _hold(path: Path) -> subprocess.Popen:
    """Another process holding ``path``'s lock until killed."""
    script = "import sys, time; from model_garden.locks import FileLock; FileLock(sys.argv[1], 'x').acquire(); print('held', flush=True); time.sleep(600)"
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_lock_names_its_holder_and_a_killed_holders_lock_is_taken_over(tmp_path):
    path = tmp_path / "x.lock"
    holder = _hold(path)
    try:
        with pytest.raises(InUseError, match=rf"--out p is in use by pid {holder.pid} on {os.uname().nodename} since 20.*; wait for it"):
            FileLock(path, "--out p").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with FileLock(path, "--out p"):  # the dead process's lock is gone with it
        assert json.loads(path.read_text())["pid"] == os.getpid()


class SecondWriter(TrainerCallback):
    """At a step of the live run, try what a second process would: train into the same folder."""

    def __init__(self, attempts):
        self.attempts, self.errors = attempts, []

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            for cfg in self.attempts:
                with pytest.raises(InUseError) as caught:
                    train(cfg)
                self.errors.append(str(caught.value))


@pytest.mark.integration
def test_a_second_train_into_a_live_runs_folder_is_refused_and_the_first_finishes(tmp_path, tiny_model_dir):
    data = _dataset(tmp_path, 4)
    out = tmp_path / "run"
    mine = _cfg(tiny_model_dir, data, out, batch_size=2, max_steps=2, lr=0.01)
    intruders = [_cfg(tiny_model_dir, data, out, batch_size=2, max_steps=5, lr=0.5, overwrite=True),
                 _cfg(tiny_model_dir, data, out, batch_size=2, max_steps=5, lr=0.5, resume="latest"),
                 _cfg(tiny_model_dir, data, out, batch_size=2, max_steps=5, lr=0.5, resume="auto")]
    second = SecondWriter(intruders)
    result = train(mine, callbacks=[second])
    assert len(second.errors) == 3
    assert all(e.startswith(f"--output {out} is in use by pid {os.getpid()}") for e in second.errors)
    # The first run finished with its own files.
    assert result.metrics["steps"] == 2 and (out / "model.safetensors").is_file()  # _cfg fine-tunes fully
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 0.01 and saved["optim"]["max_steps"] == 2
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines() if "loss" in line][-1] == 2


@pytest.mark.integration
def test_resume_auto_starts_then_continues_and_a_killed_runs_lock_does_not_block_it(tmp_path, tiny_model_dir):
    data = _dataset(tmp_path, 6)
    out = tmp_path / "run"
    common = dict(batch_size=2, max_steps=4, optim="adamw_torch", lr=1e-3, save_steps=1)
    first = train(_cfg(tiny_model_dir, data, out, resume="auto", **common), callbacks=[InterruptAt(2)])  # nothing there: starts
    assert first.interrupted
    holder = _hold(out / ".model-garden.lock")  # a process that died holding the folder...
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    second = train(_cfg(tiny_model_dir, data, out, resume="auto", **common))  # ...blocks nothing: continues
    assert second.metrics["steps"] == 4 and not second.interrupted
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert min(r["step"] for r in log if "loss" in r and r["step"] > first.metrics["interrupted_at_step"]) > first.metrics["interrupted_at_step"]


def test_a_second_predict_into_the_same_file_is_refused(tmp_path, tiny_model_dir):
    from model_garden.inference.predict import predict

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    out = tmp_path / "preds.jsonl"
    holder = _hold(tmp_path / "preds.jsonl.lock")
    try:
        with pytest.raises(InUseError, match=rf"--out {out} is in use by pid {holder.pid}"):
            predict(tiny_model_dir, data, out, constrained=False, max_new_tokens=2)
    finally:
        holder.kill()
        holder.wait()
    predict(tiny_model_dir, data, out, constrained=False, max_new_tokens=2)  # the holder is gone: this one writes
    assert out.is_file() and not (tmp_path / "preds.jsonl.lock").exists()
