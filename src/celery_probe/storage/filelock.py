"""An exclusive lock on a file beside the one it guards, waited for under a deadline.

``fcntl.flock`` has no timeout of its own, so a second process that finds the lock held
polls for it until ``timeout`` and then gives up with :class:`LockBusy`: a stuck run (or a
report folder on a hung network file system) cannot make the next one hang. The lock file
is never deleted (deleting it would let a third process lock a fresh inode while a second
still holds the old one); the kernel drops the lock when its holder dies.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_POLL = 0.05


class LockBusy(Exception):
    """Another run held the lock for longer than we were willing to wait."""


def lock_path(state_path: Path) -> Path:
    return state_path.with_name(state_path.name + ".lock")


@contextmanager
def locked(state_path: Path, timeout: float) -> Iterator[None]:
    """Hold the exclusive lock beside ``state_path``; LockBusy after ``timeout`` seconds."""
    path = lock_path(state_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        end = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if time.monotonic() >= end:
                raise LockBusy(f"another run holds {path}")
            time.sleep(LOCK_POLL)  # polling a lock under a deadline: flock has no timeout
        yield
    finally:
        os.close(fd)  # closing releases the lock
