"""Progress for long jobs: a rich bar on a terminal, plain lines in a log.

When output is not a terminal (CI, ``nohup``, a cluster job) a progress bar only shows
its last frame, so a 25-minute run printed nothing until it ended. ``progress_reporter``
then prints one plain line at a steady interval instead (``MODEL_GARDEN_LOG_EVERY``
seconds, 30 by default): what is done, the rate and the time left.

Try it: ``python -m model_garden.progress | cat`` shows the plain form.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def log_interval() -> float:
    """Seconds between plain progress lines."""
    return float(os.environ.get("MODEL_GARDEN_LOG_EVERY", "30"))


def plain(console: Console) -> bool:
    """Whether ``console`` writes to a log rather than a terminal."""
    return not console.is_terminal


def eta(done: float, total: float, elapsed: float) -> str:
    """Time left at the rate so far, as ``1h02m`` / ``3m05s`` / ``12s``."""
    if done <= 0 or total <= done:
        return "0s"
    left = int(elapsed * (total - done) / done)
    hours, rest = divmod(left, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


@contextlib.contextmanager
def progress_reporter(label: str, total: int, console: Console | None = None) -> Iterator[Callable[[int, int], None]]:
    """A function ``report(items_done_now, tokens_so_far)`` that shows progress over ``total`` items."""
    console = console or Console(stderr=True)
    start = time.perf_counter()
    state = {"done": 0, "last": start}
    if plain(console):

        def report(advance: int, tokens: int) -> None:
            state["done"] += advance
            now = time.perf_counter()
            if now - state["last"] >= log_interval() or state["done"] >= total:
                state["last"] = now
                elapsed = now - start
                console.print(
                    f"{label}: {state['done']}/{total} · {tokens / max(elapsed, 1e-9):.1f} tokens/s · "
                    f"{elapsed:.0f} s elapsed · ETA {eta(state['done'], total, elapsed)}",
                    soft_wrap=True,
                )

        yield report
        return
    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(label, total=total, speed="")

        def report(advance: int, tokens: int) -> None:
            bar.update(task, advance=advance, speed=f"{tokens / max(time.perf_counter() - start, 1e-9):.1f} tokens/s")

        yield report


if __name__ == "__main__":
    os.environ.setdefault("MODEL_GARDEN_LOG_EVERY", "0.2")
    with progress_reporter("demo", 10, Console(file=sys.stdout)) as step:
        for i in range(10):
            time.sleep(0.1)
            step(1, 10 * (i + 1))
