"""The status page at ``/`` of ``celery-probe serve``, rendered once per change, not per request.

The page is rebuilt only when the loop publishes a new snapshot or the history file
changes (its size, mtime or inode); a burst of requests in between gets the same bytes
without touching the disk. Rendering runs in a thread so a long history never stalls the
event loop, and it never waits for the probe loop: it reads the latest snapshot, which the
loop replaces in one assignment.
"""

from __future__ import annotations

import asyncio
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from celery_probe.serve.loop import RECENT_RUNS, ProbeLoop
from celery_probe.storage.reports import HISTORY

PAGE_RUNS = RECENT_RUNS  # without a report dir the loop's memory is the history: as many runs as it keeps
MIN_REFRESH = 5


class StatusPage:
    """Renders and caches the page for one :class:`~celery_probe.serve.loop.ProbeLoop`."""

    def __init__(self, loop: ProbeLoop, *, interval: float, report_dir: Path | None, runs: int = PAGE_RUNS) -> None:
        self.loop = loop
        self.report_dir = report_dir
        self.runs = runs
        self.refresh_s = max(MIN_REFRESH, math.ceil(interval))
        self.renders = 0  # how many times the page was built (the cache's misses)
        self._key: tuple[Any, ...] | None = None
        self._page = b""
        self._lock = asyncio.Lock()

    def _history_key(self) -> tuple[int, int, int] | None:
        if self.report_dir is None:
            return None
        try:
            stat = os.stat(self.report_dir / HISTORY)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    async def page(self) -> bytes:
        """The page for the latest snapshot and history, from the cache when neither changed."""
        snapshot = self.loop.snapshot
        key = (snapshot.run, snapshot.produced_mono, self._history_key())
        if key == self._key:
            return self._page
        async with self._lock:  # a burst after a change renders once; the others wait for it
            if key != self._key:
                entries = list(self.loop.recent) if self.report_dir is None else None
                self._page = await asyncio.to_thread(self._render, snapshot, entries)
                self._key = key
                self.renders += 1
            return self._page

    def _render(self, snapshot: Any, entries: list[dict[str, Any]] | None) -> bytes:
        from celery_probe.storage.history import History, from_entries, read_history
        from celery_probe.present.status_page import render_status_page

        notes: list[str] = []
        if entries is not None:
            history = from_entries(entries, runs=self.runs)
        else:
            assert self.report_dir is not None
            try:
                history = read_history(self.report_dir, runs=self.runs)
            except OSError as exc:
                history = History()
                notes.append(f"cannot read the history in {self.report_dir}: {exc.strerror or exc}")
        page = render_status_page(history, snapshot.verdict, snapshot.report, now=datetime.now(timezone.utc),
                                  runs=self.runs, notes=notes, refresh_s=self.refresh_s)
        return page.encode("utf-8")
