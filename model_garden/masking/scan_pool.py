"""Run a task over chunks of a stream in worker processes, results in the stream's order.

``ordered_map(task, chunks, processes)`` is ``map(task, chunks)`` spread over
``processes`` worker processes: the scan (``masking.scan``) uses it to build and check
examples on several cores. The task (a picklable callable holding the codec, with its
tokenizer or processor) is sent to each worker once, when it starts, not with every chunk.
At most ``WINDOW`` chunks per process are in flight, so a stream of any length is read
as the workers keep up, and memory stays flat.

Workers are spawned, not forked: the parent has torch and tokenizers' thread pools
running, and a fork inherits their locks in whatever state they are (tokenizers then
turns its parallelism off, with a warning). Spawning costs each worker an import of the tokenizer
stack (about 2 s), which is why the scan starts a pool only when it is still running
after that long (``scan.POOL_AFTER_S``). As for any spawned process, a script that calls
it must keep its top level under ``if __name__ == "__main__":`` (workers import the
script); the ``model-garden`` commands do.

Try it: ``python -m model_garden.masking.scan_pool`` squares numbers in 2 processes.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

# Chunks queued per worker: enough that none waits for the parent, few enough to stay small.
WINDOW = 2

_task: Callable[[Any], Any] | None = None  # the worker's copy, set once by _start


def _start(task: Callable[[Any], Any]) -> None:
    global _task
    _task = task
    # One process per core: a task that uses torch (an image processor, imported as the
    # task was unpickled) must not also start one thread per core in every worker.
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _run(chunk: Any) -> Any:
    assert _task is not None
    return _task(chunk)


def ordered_map(task: Callable[[Any], Any], chunks: Iterable[Any], processes: int) -> Iterator[Any]:
    """``task(chunk)`` for each chunk, in order, computed in ``processes`` worker processes.

    An exception a task raises is raised here, at its chunk; leaving the loop early
    cancels the chunks not yet started.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_start, initargs=(task,)) as pool:
        pending: deque[Future] = deque()
        try:
            for chunk in chunks:
                pending.append(pool.submit(_run, chunk))
                if len(pending) >= WINDOW * processes:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _square(x: int) -> int:
    return x * x


if __name__ == "__main__":
    print(list(ordered_map(_square, range(10), 2)))
