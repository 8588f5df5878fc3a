"""compare's runs as scheduler jobs: ``compare --launcher local|slurm``, through submitit.

Each run that has to train or decode is one job. submitit pickles the call and runs it in
a process of its own on this machine (``local``) or as a Slurm job (``slurm``), with the
run's cores, memory, GPUs and time limit, and keeps its log under ``OUT/launcher/``. The
job runs compare's own ``run_one``, so it trains (resuming from the run's checkpoints),
decodes and evaluates exactly as the inline path does; the parent then gathers every run
through that same path, where each is reused, so the report is the one an inline compare
writes. A job that fails or is killed loses nothing done: its checkpoints stay, the
other jobs finish, and the next compare resumes it.

The parent stays until the last job ends and starts at most ``--parallel`` at once; if it
is interrupted, its jobs are cancelled, and the next compare resumes each run from its
last checkpoint.

Try it: ``model-garden compare ... --launcher local --arm-cpus 1`` (two runs at once on
two cores).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit
import torch
from rich.console import Console

from model_garden.cores import available_cores
from model_garden.experiments.options import LaunchOptions

SLURM_CPUS = 8
POLL_SECONDS = 2.0


def resources(opts: LaunchOptions, runs: int) -> tuple[int, int]:
    """``(cores per run, runs at once)``: locally the machine's cores shared among the runs
    that fit at once; on Slurm the scheduler places them, so all go at once."""
    if opts.launcher == "slurm":
        return opts.arm_cpus or SLURM_CPUS, opts.parallel or max(1, runs)
    at_once = opts.parallel or max(1, min(runs, available_cores() // (opts.arm_cpus or 1)))
    return opts.arm_cpus or max(1, available_cores() // at_once), at_once


def run_in_job(work: Callable[..., Any], cfg: Any, arm: str, seed: int, cpus: int) -> str:
    """The job's body: one run with ``cpus`` torch threads (training and decoding)."""
    torch.set_num_threads(cpus)
    work(cfg, arm, seed, Console(stderr=True), threads=cpus)
    return f"{arm}-seed{seed}"


def _executor(opts: LaunchOptions, folder: Path, cpus: int) -> Any:
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=opts.launcher)
    params: dict[str, Any] = {"cpus_per_task": cpus, "timeout_min": opts.arm_timeout_min, "gpus_per_node": opts.arm_gpus}
    if opts.arm_mem_gb is not None:
        params["mem_gb"] = opts.arm_mem_gb
    if opts.launcher == "slurm" and opts.slurm_partition:
        params["slurm_partition"] = opts.slurm_partition
    executor.update_parameters(**params)
    return executor


def _last_line(exc: BaseException) -> str:
    """The job's own error from submitit's message (its traceback sits between two rules
    of dashes, followed by the log paths); else the message's last line."""
    parts = str(exc).split("-" * 22)
    lines = [line.strip() for line in (parts[1] if len(parts) > 2 else str(exc)).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def launch(opts: LaunchOptions, out: Path, runs: list[tuple[str, int]], work: Callable[..., Any], cfg: Any, console: Console) -> None:
    """Run ``work(cfg, arm, seed, console, threads=...)`` for each ``(arm, seed)`` as a job
    and wait for all of them.

    Raises:
        RuntimeError: naming each run whose job failed, its log and its error's last line
            (``self_explaining``: the CLI prints it as one line).
    """
    if not runs:
        return
    cpus, at_once = resources(opts, len(runs))
    folder = out / "launcher"
    executor = _executor(opts, folder, cpus)
    console.print(f"{opts.launcher} launcher: {len(runs)} runs, {at_once} at once, {cpus} cores each; logs in {folder}")
    waiting, running, failed = list(runs), [], []
    try:
        while waiting or running:
            while waiting and len(running) < at_once:
                arm, seed = waiting.pop(0)
                executor.update_parameters(name=f"model-garden-{arm}-seed{seed}")
                job = executor.submit(run_in_job, work, cfg, arm, seed, cpus)
                console.print(f"started {arm} · seed {seed}: job {job.job_id}, log {job.paths.stderr}")
                running.append((arm, seed, job))
            time.sleep(POLL_SECONDS)
            for item in [r for r in running if r[2].done()]:
                running.remove(item)
                arm, seed, job = item
                try:
                    job.result()
                    console.print(f"finished {arm} · seed {seed}")
                except Exception as exc:  # the job's error, raised here as submitit's FailedJobError
                    failed.append(f"{arm}-seed{seed} ({_last_line(exc)}; log {job.paths.stderr})")
    except KeyboardInterrupt:
        for _, _, job in running:
            job.cancel(check=False)
        raise
    if failed:
        error = RuntimeError(
            f"compare: {len(failed)} of {len(runs)} runs failed: {'; '.join(failed)}. "
            "The others are done and every checkpoint is kept: run compare again to resume."
        )
        error.self_explaining = True  # type: ignore[attr-defined]
        raise error
