"""The runs and actions a status page shows, read from ``history.jsonl`` and its rotated files.

:func:`parse_lines` is pure: history lines in, a :class:`History` out. The file is written
by us, but a line can still be torn (a disk that filled up), hand-edited, or of a kind this
version does not know (remediation actions are recorded in the same file): such lines are
counted and skipped, never fatal. :func:`read_history` reads the files from their end, one
block at a time, only as far back as the last N runs need, so a page costs the same with a
history of a hundred lines or of twenty thousand.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from celery_probe.numbers import number
from celery_probe.storage.reports import HISTORY, HISTORY_KEEP
from celery_probe.verdict.mapper import STATUSES

BLOCK = 65_536
MAX_READ_BYTES = 16_000_000  # per file: far past what N runs take; a bound, not a target
MAX_LINE = 1_000_000  # a history line is about 300 bytes; a longer one is not ours
OVERSIZED = b"\x00"  # stands for a line past MAX_LINE: not JSON, so counted as corrupt
MAX_TEXT = 500
MAX_CODES = 20
MAX_TARGETS = 50
TIME_KEYS = ("at", "checked_at", "time", "started_at", "finished_at")


@dataclass(frozen=True)
class Figures:
    """One target's figures in a run (``target_figures`` of a history line)."""

    roundtrip_ms: float | None = None
    queue_length: int | None = None
    workers: int | None = None


@dataclass(frozen=True)
class HistoryEntry:
    """One probe run as a history line records it."""

    checked_at: str | None
    status: str
    roundtrip_ms: float | None = None
    queue_length: int | None = None
    workers: int | None = None
    duration_s: float | None = None
    codes: tuple[str, ...] = ()
    targets: tuple[tuple[str, str], ...] = ()  # (target name, its status), several targets per run
    # (target name, its figures); empty on lines written before they were recorded
    target_figures: tuple[tuple[str, Figures], ...] = ()


@dataclass(frozen=True)
class Action:
    """A remediation action recorded in the history (``"event": "remediation"``)."""

    at: str | None
    action: str
    target: str | None = None
    outcome: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class History:
    """The last runs (oldest first), the actions among them, and what could not be read."""

    runs: tuple[HistoryEntry, ...] = ()
    actions: tuple[Action, ...] = ()
    corrupt: int = 0  # lines that are not a JSON object, or a run line of the wrong shape
    other: int = 0  # well-formed lines of a kind this page does not show
    files: tuple[str, ...] = field(default=())


def parse_lines(lines: Iterable[str | bytes | Mapping[str, Any]], *, runs: int) -> History:
    """The last ``runs`` runs in ``lines`` (oldest first), with the actions and skips among them.

    ``lines`` come oldest first, as text or as history entries already parsed (those
    ``serve`` keeps in memory without a report dir); only the newest ``runs`` runs are
    kept, and the actions and skipped lines counted are those no older than the oldest
    run kept.
    """
    return _collect(reversed(list(lines)), runs=runs, files=())


from_entries = parse_lines  # the name for history entries kept in memory


def read_history(folder: Path, *, runs: int) -> History:
    """The last ``runs`` runs of ``folder``'s history, reading rotated files when needed.

    Raises :class:`OSError` when a history file exists but cannot be read.
    """
    paths = [folder / HISTORY] + [folder / f"{HISTORY}.{n}" for n in range(1, HISTORY_KEEP + 1)]
    present = [path for path in paths if path.is_file()]

    def newest_first() -> Iterator[str | bytes]:
        for path in present:
            yield from _lines_from_end(path)

    return _collect(newest_first(), runs=runs, files=tuple(p.name for p in present))


@dataclass(frozen=True)
class LastTimes:
    """Unix times of the newest run and of the newest healthy run that a history records."""

    run: float | None = None
    success: float | None = None


def last_times(newest_first: Iterable[str | bytes]) -> LastTimes:
    """The ``checked_at`` of the newest run line and of the newest healthy one. Pure.

    Reads no further back than the newest healthy run: a history of 64 healthy runs then
    a down one costs two lines. Lines that are torn, of another kind or without a readable
    time are passed over, as the status page does.
    """
    run: float | None = None
    for raw in newest_first:
        line = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        entry = classify(line) if line.strip() else None
        if not isinstance(entry, HistoryEntry):
            continue
        at = _unix_time(entry.checked_at)
        if at is None:
            continue
        run = at if run is None else run
        if entry.status == "healthy":
            return LastTimes(run, at)
    return LastTimes(run, None)


def read_last_times(folder: Path) -> LastTimes:
    """:func:`last_times` of ``folder``'s history, rotated files included, read from their end.

    What ``serve`` restores on start, so its metrics keep the last run and the last
    success across a restart. Raises :class:`OSError` when a history file cannot be read.
    """
    paths = [folder / HISTORY] + [folder / f"{HISTORY}.{n}" for n in range(1, HISTORY_KEEP + 1)]

    def newest_first() -> Iterator[bytes]:
        for path in paths:
            if path.is_file():
                yield from _lines_from_end(path)

    return last_times(newest_first())


def _unix_time(text: str | None) -> float | None:
    """An ISO 8601 ``checked_at`` as Unix time; None for a missing, unreadable or zoneless one."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def _collect(newest_first: Iterable[str | bytes | Mapping[str, Any]], *, runs: int, files: tuple[str, ...]) -> History:
    found: list[HistoryEntry] = []
    actions: list[Action] = []
    corrupt = other = 0
    for raw in newest_first:
        if len(found) >= runs:
            break
        if isinstance(raw, Mapping):
            kind = from_document(raw)
        else:
            line = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
            if not line.strip():
                continue
            kind = classify(line)
        if isinstance(kind, HistoryEntry):
            found.append(kind)
        elif isinstance(kind, Action):
            if len(actions) < runs:
                actions.append(kind)
        elif kind == "corrupt":
            corrupt += 1
        else:
            other += 1
    return History(tuple(reversed(found)), tuple(reversed(actions)), corrupt, other, files)


def classify(line: str) -> HistoryEntry | Action | str:
    """A line as a :class:`HistoryEntry`, an :class:`Action`, ``"corrupt"`` or ``"other"`` (unknown kind)."""
    try:
        document = json.loads(line)
    except (ValueError, RecursionError):
        return "corrupt"
    return from_document(document)


def from_document(document: Any) -> HistoryEntry | Action | str:
    """A parsed history line (or a history entry in memory) as :func:`classify` sees it."""
    if not isinstance(document, Mapping):
        return "corrupt"
    event = document.get("event")
    if event == "remediation" or ("action" in document and "status" not in document and event is None):
        return _action(document)
    if event not in (None, "run"):
        return "other"
    if "status" not in document:
        return "other" if "checked_at" not in document else "corrupt"
    status = document.get("status")
    if not isinstance(status, str):
        return "corrupt"
    return HistoryEntry(
        checked_at=_text(document.get("checked_at"), 64),
        status=status if status in STATUSES else "unknown",
        roundtrip_ms=_figure(document.get("roundtrip_ms")),
        queue_length=_count(document.get("queue_length")),
        workers=_count(document.get("workers")),
        duration_s=_figure(document.get("duration_s")),
        codes=tuple(c[:100] for c in document.get("codes") or [] if isinstance(c, str))[:MAX_CODES]
        if isinstance(document.get("codes"), list) else (),
        targets=tuple(
            (str(name)[:100], s if s in STATUSES else "unknown")
            for name, s in list(document["targets"].items())[:MAX_TARGETS]
        ) if isinstance(document.get("targets"), Mapping) else (),
        target_figures=_target_figures(document.get("target_figures")),
    )


def _target_figures(value: Any) -> tuple[tuple[str, Figures], ...]:
    """``target_figures`` of a line; a target whose entry is not an object is left out."""
    if not isinstance(value, Mapping):
        return ()
    return tuple(
        (str(name)[:100], Figures(_figure(figures.get("roundtrip_ms")), _count(figures.get("queue_length")),
                                  _count(figures.get("workers"))))
        for name, figures in list(value.items())[:MAX_TARGETS] if isinstance(figures, Mapping)
    )


def _action(document: Mapping[str, Any]) -> Action:
    at = next((_text(document.get(key), 64) for key in TIME_KEYS if isinstance(document.get(key), str)), None)
    return Action(
        at=at,
        action=_text(document.get("action")) or _text(document.get("kind")) or "remediation",
        target=_text(document.get("target")),
        outcome=_text(document.get("outcome")) or _text(document.get("result")) or _text(document.get("status")),
        message=_text(document.get("message")) or _text(document.get("detail")) or _text(document.get("reason")),
    )


def _lines_from_end(path: Path) -> Iterator[bytes]:
    """The lines of ``path``, newest first, read backwards a block at a time (bounded).

    A line longer than :data:`MAX_LINE` is not gathered: it comes out as :data:`OVERSIZED`,
    which reads as a corrupt line, so a file of one endless line costs no more than
    :data:`MAX_READ_BYTES` read once.
    """
    with open(path, "rb") as handle:
        position = handle.seek(0, 2)
        rest = b""  # the end of a line whose start lies further back
        oversized = False  # the line being gathered passed MAX_LINE: its bytes are dropped
        consumed = 0
        while position > 0 and consumed < MAX_READ_BYTES:
            step = min(BLOCK, position)
            position -= step
            handle.seek(position)
            pieces = handle.read(step).split(b"\n")
            consumed += step
            if len(pieces) > 1:
                yield OVERSIZED if oversized else pieces[-1] + rest
                yield from reversed(pieces[1:-1])
                rest, oversized = pieces[0], False
            elif oversized or len(rest) + step > MAX_LINE:
                rest, oversized = b"", True
            else:
                rest = pieces[0] + rest
        if position == 0 and (rest or oversized):
            yield OVERSIZED if oversized else rest  # the file's first line, whole


def _text(value: Any, limit: int = MAX_TEXT) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def _figure(value: Any) -> float | None:
    """A figure of a history line: a number, and never a negative one (no duration or count is)."""
    found = number(value)
    return float(found) if found is not None and found >= 0 else None


def _count(value: Any) -> int | None:
    found = _figure(value)
    return int(found) if found is not None else None
