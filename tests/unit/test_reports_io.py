"""Report files, the local part: history rotation, its lock, stale temporary files."""

from __future__ import annotations

import json

from celery_probe.storage.reports import append_line


class TestHistoryRotation:
    """history.jsonl rotates at its size cap, keeping a bounded number of old files."""

    def test_rotates_and_keeps_three(self, tmp_path):
        history = tmp_path / "history.jsonl"
        for i in range(100):
            append_line(history, {"i": i, "pad": "z" * 90}, max_bytes=1000, keep=3)
        files = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
        assert files == ["history.jsonl", "history.jsonl.1", "history.jsonl.2", "history.jsonl.3"]
        assert all(p.stat().st_size <= 1000 for p in tmp_path.glob("history.jsonl*"))
        newest = [json.loads(line)["i"] for line in history.read_text().splitlines()]
        older = [json.loads(line)["i"] for line in (tmp_path / "history.jsonl.1").read_text().splitlines()]
        assert newest[-1] == 99 and older[-1] == newest[0] - 1


class TestHistoryLock:
    """A writer that holds the history lock too long makes the next give up, not hang."""

    def test_a_held_lock_is_waited_for_then_reported(self, tmp_path, monkeypatch):
        import fcntl
        import os
        import time

        import pytest

        from celery_probe.errors import ReportWriteError
        from celery_probe.storage import reports

        monkeypatch.setattr(reports, "HISTORY_LOCK_TIMEOUT", 0.5)
        history = tmp_path / "history.jsonl"
        append_line(history, {"n": 1})
        holder = os.open(tmp_path / "history.jsonl.lock", os.O_RDWR)  # what a stuck writer holds
        fcntl.flock(holder, fcntl.LOCK_EX)
        try:
            started = time.monotonic()
            with pytest.raises(ReportWriteError, match="history.jsonl.lock"):
                reports.write_run_files(tmp_path, None, {"status": "down"})
            assert 0.5 <= time.monotonic() - started < 2.0
        finally:
            os.close(holder)
        append_line(history, {"n": 2})  # released: the next writer goes on
        assert [json.loads(line)["n"] for line in history.read_text().splitlines()] == [1, 2]


class TestStaleTempFiles:
    """A run killed mid-write leaves a temp file; the next run clears it once it is old."""

    def test_the_watchdogs_leftovers_are_swept_by_a_later_run(self, tmp_path):
        import os
        import time

        from celery_probe.storage.reports import check_report_dir

        old = tmp_path / ".latest.json.k2j3h4.tmp"
        fresh = tmp_path / ".verdict.json.a8s7d6.tmp"  # may be a live writer's: left alone
        other = tmp_path / "notes.tmp"  # not one of ours
        for path in (old, fresh, other):
            path.write_text("{")
        hour_ago = time.time() - 3700
        os.utime(old, (hour_ago, hour_ago))
        os.utime(other, (hour_ago, hour_ago))
        check_report_dir(tmp_path)
        assert not old.exists() and fresh.exists() and other.exists()
