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
