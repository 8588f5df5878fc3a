"""Crash-safe checkpoints (model_garden/training/checkpoints.py).

A training subprocess is killed (SIGKILL) at each point of a checkpoint save, and a save
fails with ENOSPC, through the ``MODEL_GARDEN_FAULT`` hook; ``--resume latest`` then ends
with the weights of an uninterrupted run, bit for bit, and ``log.jsonl`` holds each step once.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from model_garden.training.callbacks import JsonlLog
from model_garden.training.checkpoints import FAULT_ENV, CheckpointError, inject_fault, latest_complete_checkpoint, write_failure

REPO = Path(__file__).resolve().parents[1]
DATASET = REPO / "model_garden/assets/example.jsonl"
KILLED = -9


def _checkpoint(folder: Path, state: str | None = "{}", weights: bool = True) -> Path:
    folder.mkdir(parents=True)
    if state is not None:
        (folder / "trainer_state.json").write_text(state)
    if weights:
        (folder / "model.safetensors").write_bytes(b"")
    (folder / "optimizer.pt").write_bytes(b"")
    return folder


def test_latest_complete_checkpoint_skips_incomplete_ones(tmp_path):
    assert latest_complete_checkpoint(tmp_path / "missing") == (None, [])
    _checkpoint(tmp_path / "checkpoint-2")
    complete = _checkpoint(tmp_path / "checkpoint-3")
    _checkpoint(tmp_path / "checkpoint-4", state=None)  # killed before trainer_state.json
    _checkpoint(tmp_path / "checkpoint-5", state="")  # killed while writing it
    _checkpoint(tmp_path / "checkpoint-10", weights=False)
    _checkpoint(tmp_path / ".tmp-checkpoint-11")  # a save not yet renamed
    found, skipped = latest_complete_checkpoint(tmp_path)
    assert found == complete
    assert skipped == [
        f"{tmp_path / 'checkpoint-10'} (no weights)",
        f"{tmp_path / 'checkpoint-5'} (unreadable trainer_state.json)",
        f"{tmp_path / 'checkpoint-4'} (no trainer_state.json)",
    ]
    assert latest_complete_checkpoint(tmp_path / "checkpoint-4") == (None, [])


def test_write_failures_become_a_clear_checkpoint_error(tmp_path):
    _checkpoint(tmp_path / "checkpoint-3")
    folder = tmp_path / "checkpoint-4"
    full = write_failure(folder, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert isinstance(full, CheckpointError) and full.errno == errno.ENOSPC and full.filename == str(folder)
    assert str(full) == f"{folder}: could not save the checkpoint (No space left on device); the previous checkpoint (checkpoint-3) is intact: continue from it with --resume latest"
    rust = write_failure(folder, Exception("No space left on device (os error 28)"))  # how tokenizers and safetensors say it
    assert rust is not None and rust.errno == errno.ENOSPC
    zip_writer = write_failure(folder, RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 640 vs 534"))
    assert zip_writer is not None and "is the disk full?" in str(zip_writer)
    assert write_failure(folder, RuntimeError("a bug")) is None  # not a write: re-raised as it is
    alone = write_failure(tmp_path / "first/checkpoint-1", OSError(errno.EIO, os.strerror(errno.EIO)))
    assert "no checkpoint was saved before it" in str(alone)


def test_fault_hook_acts_only_on_its_step_and_checks_its_spec(monkeypatch):
    inject_fault("after_weights", 2)  # not set: nothing
    monkeypatch.setenv(FAULT_ENV, "save:2:enospc")
    inject_fault("after_weights", 3)
    inject_fault("start", 2)
    with pytest.raises(OSError) as err:
        inject_fault("after_weights", 2)
    assert err.value.errno == errno.ENOSPC
    monkeypatch.setenv(FAULT_ENV, "save:2:midway")
    with pytest.raises(ValueError, match=f"{FAULT_ENV}=save:2:midway: expected save:<step>:<point>"):
        inject_fault("start", 1)


def test_log_is_cut_back_to_the_resumed_step(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (0, 1, 2, 3)) + '{"step": 4, "lo')
    state = SimpleNamespace(is_world_process_zero=True, global_step=2)
    JsonlLog(log).on_train_begin(None, state, None)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["log.jsonl"]


def _train(model: Path, out: Path, *flags: str, fault: str | None = None) -> tuple[subprocess.Popen, Path]:
    """Start ``model-garden train``; its stderr goes to a file (a pipe left unread could fill and block it)."""
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    env["OMP_NUM_THREADS"] = "1"  # the same in every run (bit-identical sums), and two runs fit on two cores
    if fault:
        env[FAULT_ENV] = fault
    cmd = [
        sys.executable, "-m", "model_garden", "train", "--base-model", str(model), "--dataset", str(DATASET), "--output", str(out),
        "--full-finetune", "--bf16", "false", "--report-to", "none", "--optim", "sgd", "--lr", "0.1", "--batch-size", "1",
        "--max-steps", "4", "--save-steps", "1", "--logging-steps", "1", *flags,
    ]  # fmt: skip
    stderr = out.with_name(out.name + ".stderr")
    with stderr.open("w") as fh:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=fh), stderr


def _run(model: Path, out: Path, *flags: str, fault: str | None = None) -> tuple[int, str]:
    proc, stderr = _train(model, out, *flags, fault=fault)
    return proc.wait(timeout=300), stderr.read_text()


def _latest(out: Path) -> str | None:
    found, skipped = latest_complete_checkpoint(out / "checkpoints")
    assert skipped == []  # checkpoint-N folders are complete or absent, whatever the crash
    return found.name if found else None


def test_killed_and_failed_saves_resume_to_the_uninterrupted_weights(tmp_path, tiny_model_dir):
    straight, straight_err = _train(tiny_model_dir, tmp_path / "straight")
    out = tmp_path / "run"
    ckpts = out / "checkpoints"

    assert _run(tiny_model_dir, out, fault="save:2:start")[0] == KILLED
    assert _latest(out) == "checkpoint-1" and (ckpts / ".tmp-checkpoint-2").is_dir()

    assert _run(tiny_model_dir, out, "--resume", "latest", fault="save:2:after_weights")[0] == KILLED
    assert _latest(out) == "checkpoint-1" and (ckpts / ".tmp-checkpoint-2/checkpoint-2/model.safetensors").is_file()

    assert _run(tiny_model_dir, out, "--resume", "latest", fault="save:3:before_rename")[0] == KILLED
    assert _latest(out) == "checkpoint-2" and (ckpts / ".tmp-checkpoint-3/checkpoint-3/trainer_state.json").is_file()

    assert _run(tiny_model_dir, out, "--resume", "latest", fault="save:3:after_rename")[0] == KILLED
    assert _latest(out) == "checkpoint-3"

    # From an earlier checkpoint: step 3 is saved again over the existing one, then the disk is full at step 4.
    code, err = _run(tiny_model_dir, out, "--resume", str(ckpts / "checkpoint-2"), fault="save:4:enospc")
    assert code == 2, err[-3000:]
    assert "Traceback" not in err
    message = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and str(ckpts / "checkpoint-4") in message[0] and "--resume latest" in message[0]
    assert _latest(out) == "checkpoint-3" and not list(ckpts.glob(".tmp-*"))

    code, err = _run(tiny_model_dir, out, "--resume", "latest")
    assert code == 0, err[-3000:]
    assert straight.wait(timeout=300) == 0, straight_err.read_text()[-3000:]
    a, b = load_file(str(tmp_path / "straight/model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line)["step"] for line in (tmp_path / "straight/log.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 4]
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-3", "checkpoint-4"]


def test_predict_killed_midway_keeps_the_old_file_and_resumes(tmp_path, tiny_model_dir):
    """SIGKILL while predicting: the earlier predictions file is untouched, the partial one
    holds complete lines (decoded shortest prompt first), and ``--resume`` finishes it with
    the replies a fresh run gives, in dataset order."""
    import time

    questions = [f"question {i}" + " and more" * ((3 * i) % 8) for i in range(8)]
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "{}"}]} for q in questions]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "p.jsonl"
    out.write_text("earlier results\n")
    partial = tmp_path / "p.jsonl.partial"
    common = ["--no-constrained", "--max-new-tokens", "120", "--batch-size", "1", "--threads", "1"]
    command = [sys.executable, "-m", "model_garden", "predict", "--model", str(tiny_model_dir), "--dataset", str(data)]
    args = [*command, "--out", str(out), *common]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not partial.is_file() or partial.read_text().count("\n") < 2):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert out.read_text() == "earlier results\n"
    done = partial.read_text().count("\n")
    assert 2 <= done < 8, done
    shortest_first = [i + 1 for i in sorted(range(8), key=lambda i: len(questions[i]))]
    assert [json.loads(line)["line"] for line in partial.read_text().splitlines()] == shortest_first[:done]
    subprocess.run([*args, "--resume"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resumed = out.read_text()
    fresh = tmp_path / "fresh.jsonl"
    subprocess.run([*command, "--out", str(fresh), *common], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert resumed == fresh.read_text() and not partial.exists()
    assert [json.loads(line)["line"] for line in resumed.splitlines()] == list(range(1, 9))


def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path, tiny_model_dir):
    """A cluster's SIGTERM: the step ends, a checkpoint is saved, the exit code is 128 + 15."""
    import signal
    import time

    rows = [{"messages": [{"role": "user", "content": f"q {i}"}, {"role": "assistant", "content": f'{{"n": {i}}}'}]} for i in range(8)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    args = [sys.executable, "-m", "model_garden", "train", "--base-model", str(tiny_model_dir), "--dataset", str(data), "--output", str(out),
            "--max-steps", "100000", "--batch-size", "2", "--bf16", "false", "--report-to", "none", "--logging-steps", "1", "--save-steps", "100000"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "log.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.is_file() and log.read_text().count("\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    checkpoints = [p.name for p in (out / "checkpoints").iterdir()]
    assert len(checkpoints) == 1 and checkpoints[0].startswith("checkpoint-")
