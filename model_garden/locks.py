"""One writer per output: an exclusive lock held for a process's whole life.

A training run locks its output folder (``training.run_folder``) and ``predict`` its
output file, so a second process (a second ``train --overwrite``, a ``--resume`` from
another shell, a requeued scheduler job starting while the old one still drains) is
refused with the holder's pid, host and start time instead of deleting or mixing files
under a live run.

The lock is ``flock`` on a small file: the kernel drops it when the holding process
dies, however it dies, so a lock left by a killed process is taken over by the next one
(the file itself stays, naming its last holder). It works across hosts on file systems
that support ``flock`` (local disks, NFSv4 through POSIX locks); on one that does not,
acquiring fails with the OS's message rather than pretending.

Try it: ``python -m model_garden.locks /tmp/x.lock`` holds a lock until Enter; a second
one in another shell is refused.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any


class InUseError(ValueError):
    """Another live process holds the lock; the message names it."""


class FileLock:
    """An exclusive, non-blocking lock on ``path`` (created if missing).

    Args:
        path: The lock file.
        what: How messages name what it protects (``--output runs/x``).
    """

    def __init__(self, path: str | Path, what: str):
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> FileLock:
        """Take the lock and write this process into the file.

        Raises:
            InUseError: a live process holds it (pid, host, start time, command named).
        """
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise InUseError(f"{self.what} is in use by {holder}; wait for it to end, or stop it") from None
            # The file may have been removed and made again between open and lock: only
            # a lock on the file the path names now excludes the others.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(), "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self, *, remove: bool = False) -> None:
        """Drop the lock (``remove``: and delete the file, for a lock beside a file)."""
        if self._fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None

    def __enter__(self) -> FileLock:
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _holder(fd: int) -> str:
    """How the lock file names its holder (read while it holds the lock)."""
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        record = {}
    if not record:
        return "another process"
    return f"pid {record.get('pid')} on {record.get('host')} since {record.get('started')} ({record.get('command', '?')})"


if __name__ == "__main__":
    with FileLock(sys.argv[1], sys.argv[1]):
        input(f"holding {sys.argv[1]}; press Enter to release ")
