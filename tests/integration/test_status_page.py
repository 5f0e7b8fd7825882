"""The status page without a browser: reading history, rendering, ``report --html``, serve's cache.

History lines here are made by the real code path from real reports: each captured
``tests/reports/*.json`` (the ``latest.json`` of a real run) goes through
``verdict_from_report`` and ``history_entry``, exactly as ``celery-probe run`` writes them.
The browser test (tests/integration/test_status_page_browser.py) renders history of live runs.
"""

from __future__ import annotations

import os

import pytest

from celery_probe.storage.reports import atomic_write_json
from tests.support.environment import run_cli
from tests.support.reports import line, report, verdict


class TestReportCommand:
    """``celery-probe report --html`` as a real process."""

    def test_writes_index_html_atomically(self, tmp_path):
        folder = tmp_path / "reports"
        folder.mkdir()
        (folder / "history.jsonl").write_text("".join(line(n) + "\n" for n in ("healthy_two_workers", "no_worker")))
        atomic_write_json(folder / "verdict.json", verdict("no_worker"))
        atomic_write_json(folder / "latest.json", report("no_worker"))
        result = run_cli("report", "--html", "--report-dir", str(folder), "--runs", "50")
        assert result.code == 0, result.stderr
        assert result.stderr.strip() == f"celery-probe: wrote {folder / 'index.html'} (2 runs)"
        html = (folder / "index.html").read_text()
        assert 'data-status="down"' in html and "of at most 50 runs" in html
        assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temp file left

    def test_an_old_page_is_replaced_by_rename_never_rewritten_in_place(self, tmp_path):
        folder = tmp_path / "reports"
        folder.mkdir()
        (folder / "history.jsonl").write_text(line("no_worker") + "\n")
        (folder / "index.html").write_text("the page a web server is sending")
        os.link(folder / "index.html", tmp_path / "being-served.html")  # the old page's inode, still open elsewhere
        result = run_cli("report", "--html", "--report-dir", str(folder))
        assert result.code == 0, result.stderr
        assert (tmp_path / "being-served.html").read_text() == "the page a web server is sending"
        assert 'data-status="down"' in (folder / "index.html").read_text()
        assert (folder / "index.html").stat().st_ino != (tmp_path / "being-served.html").stat().st_ino

    def test_report_dir_from_the_environment_and_output_elsewhere(self, tmp_path):
        folder = tmp_path / "r"
        folder.mkdir()
        (folder / "history.jsonl").write_text(line("healthy_two_workers") + "\nbroken\n")
        out = tmp_path / "site" / "status.html"
        result = run_cli("report", "--html", "--output", str(out), env={"CELERY_PROBE_REPORT_DIR": str(folder)})
        assert result.code == 0 and "1 unreadable history lines skipped" in result.stderr
        assert 'data-status="healthy"' in out.read_text()

    def test_a_corrupt_verdict_file_is_a_note_not_a_failure(self, tmp_path):
        (tmp_path / "history.jsonl").write_text(line("no_worker") + "\n")
        (tmp_path / "verdict.json").write_text('{"status": "heal')
        result = run_cli("report", "--html", "--report-dir", str(tmp_path))
        assert result.code == 0 and "note:" in result.stderr and "not valid JSON" in result.stderr
        html = (tmp_path / "index.html").read_text()
        assert 'data-status="down"' in html and "not valid JSON" in html

    @pytest.mark.parametrize("args, expected", [
        (["--html", "--report-dir", "{tmp}/missing"], "report directory {tmp}/missing does not exist (from --report-dir)"),
        (["--html", "--report-dir", "{tmp}/empty"], "holds no history.jsonl or verdict.json"),
        (["--html", "--report-dir", "{tmp}/file"], "is not a directory"),
        (["--report-dir", "{tmp}/empty"], "say which report to write: --html"),
        (["--html", "--runs", "many"], "invalid runs 'many': is not a whole number (from --runs)"),
        (["--html", "--runs", "0"], "invalid runs '0': must be between 1 and 10000 (from --runs)"),
    ])
    def test_operator_mistakes_are_one_line_and_exit_64(self, tmp_path, args, expected):
        (tmp_path / "empty").mkdir()
        (tmp_path / "file").write_text("")
        result = run_cli("report", *[a.replace("{tmp}", str(tmp_path)) for a in args], cwd=tmp_path)
        assert result.code == 64, result
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert expected.replace("{tmp}", str(tmp_path)) in result.stderr

    def test_an_unwritable_output_exits_73(self, tmp_path):
        (tmp_path / "history.jsonl").write_text(line("no_worker") + "\n")
        blocker = tmp_path / "blocker"
        blocker.write_text("")
        result = run_cli("report", "--html", "--report-dir", str(tmp_path), "--output", str(blocker / "index.html"))
        assert result.code == 73 and result.stderr.startswith("celery-probe: error: cannot write the status page")
