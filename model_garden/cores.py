"""How many CPU cores a job may take: the ones other processes leave free.

On a shared CPU, torch's default of one thread per core collapses when another job
holds a core (measured: 0.6 tokens/s with 2 threads against 16 with 1 beside a training
run). ``default_threads`` counts the cores other processes keep busy and leaves them be;
``predict`` sizes torch's threads with it, and the data scan its worker processes.

Try it: ``python -m model_garden.cores``
"""

from __future__ import annotations

import os
import time

import psutil


def busy_seconds() -> tuple[float, float]:
    """CPU seconds the whole machine and this process have spent busy so far."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0), sum(psutil.Process().cpu_times()[:2])


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_threads(window: float = 0.25) -> int:
    """Cores other processes leave free, measured over ``window`` seconds, at least 1.

    Not the load average: it counts this process's own work of the last minute (a
    training run just before, in ``compare`` or ``demo``) as another job's.
    """
    cores = available_cores()
    (all0, mine0), start = busy_seconds(), time.perf_counter()
    time.sleep(window)
    (all1, mine1), seconds = busy_seconds(), time.perf_counter() - start
    others = max(0.0, (all1 - all0) - (mine1 - mine0)) / seconds
    return max(1, cores - round(others))


if __name__ == "__main__":
    print(default_threads())
