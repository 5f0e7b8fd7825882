"""Writing and reading report files, so that no reader ever sees half of one.

``latest.json`` and ``verdict.json`` are written to a temporary file in the same folder
and renamed over the old one (the node_exporter textfile pattern). ``history.jsonl``
grows by one line per run, written with a single ``write`` on an ``O_APPEND`` descriptor
under an advisory lock, so overlapping runs never interleave lines; it rotates past 5 MB
(three old files kept).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from celery_probe.errors import ReportWriteError
from celery_probe.storage.filelock import LockBusy, locked
from celery_probe.verdict.mapper import unknown_verdict, verdict_from_report
from celery_probe.verdict.model import AnyVerdict, Verdict

LATEST = "latest.json"
VERDICT = "verdict.json"
HISTORY = "history.jsonl"
MAX_REPORT_BYTES = 50_000_000
HISTORY_MAX_BYTES = 5_000_000  # about 20,000 runs, two weeks at one run a minute
STALE_TEMP_SECONDS = 3600.0  # a temp file this old was left by a killed run
HISTORY_LOCK_TIMEOUT = 5.0  # seconds a writer waits for another one's history lock
HISTORY_KEEP = 3  # rotated files kept: history.jsonl.1 … .3  # a report this large is not ours; refuse to parse it


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` by temp file, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path: Path, document: Any, *, indent: int | None = 2) -> None:
    """``indent=None`` for a large document: only the compact form has json's C encoder."""
    atomic_write_text(path, json.dumps(document, indent=indent, sort_keys=False, default=str) + "\n")


def append_line(path: Path, document: Any, *, max_bytes: int = HISTORY_MAX_BYTES, keep: int = HISTORY_KEEP) -> None:
    """Append one JSON line in a single write, under an exclusive lock; rotate past ``max_bytes``.

    Rotation renames ``history.jsonl`` to ``history.jsonl.1`` (and ``.1`` to ``.2``…,
    keeping ``keep`` old files) under the same lock, so a run every minute never fills the
    disk and no line is split between two files. The lock is waited for at most
    ``HISTORY_LOCK_TIMEOUT`` seconds (a writer holds it for one write only).
    """
    line = (json.dumps(document, separators=(",", ":"), default=str) + "\n").encode("utf-8")
    try:
        with locked(path, HISTORY_LOCK_TIMEOUT):
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(line) > max_bytes:
                _rotate(path, keep)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
    except LockBusy as exc:  # reported like any other failure to write the report folder
        raise OSError(errno.EAGAIN, f"{exc} for longer than {HISTORY_LOCK_TIMEOUT:g}s") from None


def _rotate(path: Path, keep: int) -> None:
    for generation in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{generation}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{generation + 1}"))
    os.replace(path, path.with_name(f"{path.name}.1"))


def check_report_dir(folder: Path) -> None:
    """Fail early, in one line, when ``folder`` cannot hold reports; sweep stale temp files."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ReportWriteError(f"cannot write reports to {folder}: {exc.strerror or exc}") from None
    remove_stale_temp_files(folder)


def remove_stale_temp_files(folder: Path, older_than: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Delete the temporary files of atomic writes that a killed run never renamed.

    A run ended by the watchdog (``os._exit``) or SIGKILL in the middle of
    :func:`atomic_write_text` leaves ``.NAME.XXXX.tmp`` behind; one an hour old belongs to no
    live writer. Never raises: a file that cannot be removed is left for the next run.
    """
    removed = []
    cutoff = time.time() - older_than
    for path in folder.glob(".*.tmp"):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


def history_entry(verdict: Mapping[str, Any]) -> dict[str, Any]:
    """The compact line kept per run: enough to draw a trend, small enough to keep many.

    With several targets, ``targets`` keeps its ``{name: status}`` shape (what readers of
    older lines expect) and ``target_figures`` adds each target's figures beside it, so the
    status page can draw a series per target without reading the verdicts back.
    """
    targets = verdict.get("targets") if isinstance(verdict.get("targets"), dict) else None
    return {
        "checked_at": verdict.get("checked_at"),
        "status": verdict.get("status"),
        "worker_alive": verdict.get("worker_alive"),
        "workers": len(verdict.get("workers") or {}),
        "queue_length": verdict.get("queue_length"),
        "roundtrip_ms": verdict.get("roundtrip_ms"),
        "duration_s": verdict.get("duration_s"),
        "codes": sorted({r.get("code") for r in verdict.get("reasons") or [] if r.get("severity") != "info"}),
        **({"targets": {name: v.get("status") for name, v in targets.items()},
            "target_figures": {name: target_figures(v) for name, v in targets.items()}}
           if targets is not None else {}),
    }


def target_figures(verdict: Mapping[str, Any]) -> dict[str, Any]:
    """One target's figures in a history line: what the round-trip and queue charts draw."""
    return {
        "roundtrip_ms": verdict.get("roundtrip_ms"),
        "queue_length": verdict.get("queue_length"),
        "workers": len(verdict.get("workers") or {}),
    }


def write_run_files(folder: Path, report: dict[str, Any] | None, verdict: AnyVerdict) -> list[Path]:
    """Write ``latest.json`` (when there is a report), ``verdict.json`` and a history line."""
    written = []
    try:
        if report is not None:
            atomic_write_json(folder / LATEST, report, indent=None)  # the whole report: written every run
            written.append(folder / LATEST)
        atomic_write_json(folder / VERDICT, verdict)
        written.append(folder / VERDICT)
        append_line(folder / HISTORY, history_entry(verdict))
        written.append(folder / HISTORY)
    except OSError as exc:
        raise ReportWriteError(f"cannot write reports to {folder}: {exc.strerror or exc}") from None
    return written


def load_report(path: Path) -> tuple[Any, str | None]:
    """Read a report file; on any problem return ``(None, one-line reason)``."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return None, f"cannot read report {path}: {exc.strerror or exc}"
    if size == 0:
        return None, f"report {path} is empty"
    if size > MAX_REPORT_BYTES:
        return None, f"report {path} is {size} bytes, over the {MAX_REPORT_BYTES}-byte limit"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot read report {path}: {exc}"
    try:
        return json.loads(text), None
    except ValueError as exc:
        return None, f"report {path} is not valid JSON ({exc.msg} at line {exc.lineno}): truncated or corrupt"
    except RecursionError:  # json's decoder recurses once per nesting level
        return None, f"report {path} is nested too deeply to be a report (not ours, or corrupt)"


def verdict_for_file(path: Path) -> tuple[Verdict, Any]:
    """The verdict for a report file, ``unknown`` with the reason when it cannot be read."""
    report, problem = load_report(path)
    if problem is not None:
        return unknown_verdict(problem), None
    return verdict_from_report(report), report
