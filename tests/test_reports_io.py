"""Report files: atomic for concurrent readers, appended whole, and free of credentials."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from celery_probe.storage.reports import append_line, atomic_write_json
from tests.support.environment import app_env, run_cli

SECRET = "s3cr3t-Pa55word"


class TestAtomicity:
    """A reader in another process never sees half a report."""

    def test_reader_never_sees_a_partial_file(self, tmp_path):
        target = tmp_path / "verdict.json"
        atomic_write_json(target, {"n": -1, "pad": "x" * 200_000})
        reader = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(f"""
                import json, sys
                bad = reads = 0
                for _ in range(1000):
                    with open({str(target)!r}) as handle:
                        text = handle.read()
                    reads += 1
                    try:
                        json.loads(text)
                    except ValueError:
                        bad += 1
                print(reads, bad)
            """)],
            stdout=subprocess.PIPE, text=True,
        )
        for n in range(100):
            atomic_write_json(target, {"n": n, "pad": "x" * (200_000 + n)})
        out, _ = reader.communicate(timeout=60)
        reads, bad = map(int, out.split())
        assert reads == 1000 and bad == 0
        assert not list(tmp_path.glob(".*.tmp"))

    def test_history_lines_from_parallel_writers_stay_whole(self, tmp_path):
        history = tmp_path / "history.jsonl"
        script = textwrap.dedent(f"""
            from celery_probe.storage.reports import append_line
            for i in range(200):
                append_line(__import__('pathlib').Path({str(history)!r}), {{"i": i, "pad": "y" * 3000}})
        """)
        procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(4)]
        for proc in procs:
            assert proc.wait(timeout=60) == 0
        lines = history.read_text().splitlines()
        assert len(lines) == 800
        assert all(json.loads(line)["pad"] == "y" * 3000 for line in lines)

    def test_append_line_creates_the_folder(self, tmp_path):
        append_line(tmp_path / "a" / "b" / "h.jsonl", {"ok": True})
        assert json.loads((tmp_path / "a" / "b" / "h.jsonl").read_text()) == {"ok": True}


class TestRedaction:
    """A password in the broker or backend URL appears nowhere, broker up or down."""

    def everything_written(self, result, folder: Path) -> str:
        files = "".join(p.read_text() for p in sorted(folder.rglob("*")) if p.is_file())
        return result.stdout + result.stderr + files

    def test_up_and_down(self, tmp_path):
        from celery_probe.testing import CeleryWorker, RedisServer
        from tests.support.environment import APPS

        with RedisServer(password=SECRET) as redis:
            env = app_env(redis.url(0), redis.url(1))
            with CeleryWorker("probe_test_app", env=env, pythonpath=[APPS]):
                up = run_cli("run", "-A", "probe_test_app", "--deadline", "2", "--format", "json",
                             env=env, cwd=tmp_path)
                assert up.code == 0, up.stdout
                verbose = run_cli("run", "-b", redis.url(0), "--backend", redis.url(1), "-v",
                                  "--deadline", "2", "--endpoint", f"http://user:{SECRET}@127.0.0.1:1/x",
                                  env=env, cwd=tmp_path)
            assert verbose.code == 3
            assert "***" in json.loads((tmp_path / "reports" / "verdict.json").read_text())["target"]
            redis.stop()
            down = run_cli("run", "-b", redis.url(0), "--backend", redis.url(1), "--deadline", "2",
                           "--format", "nagios", env=env, cwd=tmp_path)
            assert down.code == 2
        bad = run_cli("run", "-b", f"redis://:{SECRET}@localhost:nope/0", cwd=tmp_path)
        assert bad.code == 64
        for result in (up, verbose, down, bad):
            assert SECRET not in self.everything_written(result, tmp_path)
        assert SECRET not in json.dumps(json.loads((tmp_path / "reports" / "latest.json").read_text()))


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
