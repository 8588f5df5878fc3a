"""compare --launcher: runs as submitit jobs (local executor here), gathered into the report
the inline path writes; a failed job is named with its log and the others finish."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import cloudpickle
import pytest
import torch
from rich.console import Console

from model_garden.experiments.compare import CompareConfig, compare
from model_garden.experiments.launch import launch, resources
from model_garden.experiments.options import LaunchOptions
from model_garden.training.config import TrainConfig

EXAMPLE = Path(__file__).resolve().parents[1] / "model_garden/assets/example.jsonl"
# The jobs unpickle the work function in a fresh interpreter, which cannot import this file.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _work(cfg: dict, arm: str, seed: int, console: Console, threads: int) -> None:
    """A stand-in run: fails once for arm "bad" (as a killed or broken run would)."""
    out = Path(cfg["out"])
    if arm == "bad" and not (out / "bad.tried").exists():
        (out / "bad.tried").touch()
        raise ValueError("the bad arm's data is broken")
    (out / f"{arm}-seed{seed}.threads").write_text(str(threads))


def test_resources_share_the_cores_locally(monkeypatch):
    monkeypatch.setattr("model_garden.experiments.launch.available_cores", lambda: 8)
    assert resources(LaunchOptions(launcher="local"), 2) == (4, 2)
    assert resources(LaunchOptions(launcher="local"), 12) == (1, 8)
    assert resources(LaunchOptions(launcher="local", arm_cpus=2), 12) == (2, 4)
    assert resources(LaunchOptions(launcher="local", parallel=2), 12) == (4, 2)
    assert resources(LaunchOptions(launcher="slurm"), 12) == (8, 12)


def test_bad_launch_options_are_refused():
    with pytest.raises(ValueError, match="--launcher must be one of inline, local, slurm; got 'ssh'"):
        LaunchOptions(launcher="ssh")
    with pytest.raises(ValueError, match="--arm-cpus must be at least 1; got 0"):
        LaunchOptions(arm_cpus=0)


@pytest.mark.integration
def test_a_failed_job_is_named_and_the_others_finish(tmp_path):
    opts = LaunchOptions(launcher="local", arm_cpus=1, parallel=2)
    cfg = {"out": str(tmp_path)}
    runs = [("good", 0), ("bad", 0), ("late", 0)]
    with pytest.raises(RuntimeError, match=r"compare: 1 of 3 runs failed: bad-seed0 \(ValueError: the bad arm's data is broken; log .*launcher/.*\)\. .*run compare again to resume"):
        launch(opts, tmp_path, runs, _work, cfg, Console(file=open("/dev/null", "w")))
    assert (tmp_path / "good-seed0.threads").read_text() == "1" and (tmp_path / "late-seed0.threads").is_file()
    launch(opts, tmp_path, [("bad", 0)], _work, cfg, Console(file=open("/dev/null", "w")))  # the next call resumes it
    assert (tmp_path / "bad-seed0.threads").is_file()


def _results(summary: dict) -> dict:
    """What the report says of the runs, without wall-clock times."""
    timed = lambda key: "runtime" in key or "per_second" in key  # noqa: E731
    runs = {name: {k: v for k, v in row.items() if not timed(k)} for name, row in summary["runs"].items()}
    table = {arm: {k: v for k, v in cells.items() if not timed(k)} for arm, cells in summary["table"].items()}
    same = ("eval_curves", "train_curves", "decoded_curves", "per_field", "mcnemar", "shared")
    return {"runs": runs, "table": table, **{k: summary[k] for k in same}}


@pytest.mark.integration
@pytest.mark.slow
def test_local_launcher_gives_the_inline_report(tmp_path, tiny_model_dir):
    train = TrainConfig.from_options(
        base_model=str(tiny_model_dir), dataset=str(EXAMPLE), eval_dataset=str(EXAMPLE), max_steps=2, batch_size=2,
        eval_steps=1, logging_steps=1, report_to="none", bf16="false",
    )
    # moderate and aggressive train the same tokens on these forms: one run, shared, under both.
    cfg = CompareConfig(
        train=train, strategies=["none", "moderate", "aggressive"], seeds=[0], out=str(tmp_path / "inline"),
        decodings=["constrained"], predict_limit=2, max_new_tokens=8, launch=LaunchOptions(arm_cpus=1),
    )
    threads = torch.get_num_threads()
    inline = compare(cfg)
    assert torch.get_num_threads() == threads  # --arm-cpus holds for the runs only
    local_cfg = dataclasses.replace(cfg, out=str(tmp_path / "local"), launch=LaunchOptions(launcher="local", arm_cpus=1))
    launched = compare(local_cfg)
    assert _results(launched) == _results(inline)
    assert launched["shared"] == {"aggressive-seed0": "moderate-seed0"}
    jobs = lambda: [j for j in (tmp_path / "local/launcher").iterdir() if j.name.isdigit()]  # noqa: E731
    assert len(jobs()) == 2  # none and moderate; aggressive shares moderate's run
    assert json.loads((tmp_path / "local/summary.json").read_text())["config"]["launch"]["launcher"] == "local"
    # A second call finds every run finished and launches nothing.
    again = compare(local_cfg)
    assert len(jobs()) == 2
    assert _results(again) == _results(inline)
