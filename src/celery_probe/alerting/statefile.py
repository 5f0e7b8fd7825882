"""The state file on disk: an exclusive lock, a tolerant read and an atomic write.

Cron does not know that the last run is still busy, so two runs can overlap. Everything
between reading the state and writing it back (deciding, sending) happens under an
``fcntl.flock`` on ``STATE.lock`` beside the state file: the second run either waits for
the first to finish and then sees what it sent, or, after ``timeout`` seconds, gives up
alerting for this run. The lock file is never deleted (deleting it would let a third run
lock a fresh inode while the second still holds the old one). The kernel drops the lock
when a process dies, so a killed run never blocks the next.

The state itself is written with :func:`celery_probe.storage.reports.atomic_write_json` (temporary
file, fsync, rename), so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from celery_probe.alerting.state import AlertState
from celery_probe.storage.filelock import LockBusy, lock_path, locked  # noqa: F401  (used by dispatch and remediation)
from celery_probe.storage.reports import atomic_write_json

MAX_STATE_BYTES = 2_000_000
T = TypeVar("T")


def load_state(
    path: Path, parse: Callable[[Any], T] = AlertState.from_dict,  # type: ignore[assignment]
    max_bytes: int = MAX_STATE_BYTES,
) -> tuple[T | None, str | None]:
    """The stored state, or (None, why) when there is none usable.

    ``parse`` turns the JSON document into the state (ValueError when it is not one); the
    alerting state by default, the remediation state for :mod:`celery_probe.remediation`.
    A damaged state file is renamed to ``STATE.corrupt`` (kept for a human to read) and
    the run starts afresh; the caller prints ``why`` as a one-line warning.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read state file {path}: {exc.strerror or exc}"
    problem: str | None = None
    if size > max_bytes:
        problem = f"{size} bytes, over the {max_bytes}-byte limit"
    else:
        try:
            return parse(json.loads(path.read_text(encoding="utf-8"))), None
        except OSError as exc:
            return None, f"cannot read state file {path}: {exc.strerror or exc}"
        except (ValueError, UnicodeDecodeError) as exc:
            problem = f"not a valid state ({str(exc).splitlines()[0][:120]})"
        except RecursionError:
            problem = "not a valid state (nested too deeply)"
    aside = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, aside)
        moved = f"; moved to {aside}"
    except OSError:
        moved = ""
    return None, f"state file {path} is damaged: {problem}{moved}; starting afresh"


def save_state(path: Path, state: AlertState) -> None:
    """Write ``state`` atomically (raises OSError when the folder is not writable)."""
    atomic_write_json(path, state.to_dict())
