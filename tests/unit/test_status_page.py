"""The status page from files: reading history, rendering, and serve's cache of the page."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import time
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

from celery_probe.present.status_page import render_status_page
from celery_probe.serve.status_view import StatusPage
from celery_probe.storage.history import parse_lines, read_history
from celery_probe.storage.reports import append_line, history_entry
from celery_probe.verdict.mapper import verdict_from_report, verdicts_by_target
from tests.support.reports import line, report, verdict

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'



def render(history, the_verdict=None, the_report=None, **kwargs) -> str:
    return render_status_page(history, the_verdict, the_report, now=NOW, runs=kwargs.pop("runs", 100), **kwargs)


def points(html: str, chart: str, kind: str = "point") -> int:
    """How many marks of ``kind`` the SVG chart with id ``chart`` has."""
    svg = re.search(rf'<svg id="{chart}".*?</svg>', html, re.DOTALL)
    assert svg, f"no chart {chart}"
    tag = {"point": r'<circle class="point"', "gap": r'<path class="gap"', "run": r'<rect class="run '}[kind]
    return len(re.findall(tag, svg.group(0)))


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def assert_self_contained(html: str) -> None:
    """No URL of any kind, no script, no element that loads anything: works offline, from a file."""
    parser = _Tags()
    parser.feed(html)
    names = {tag for tag, _attrs in parser.tags}
    assert not names & {"script", "img", "link", "iframe", "object", "embed", "image", "use", "a", "form"}, names
    for tag, attrs in parser.tags:
        for name, value in attrs:
            assert not name.startswith("on") and name not in ("src", "href", "xlink:href", "action", "srcset"), tag
            assert not re.search(r"[a-z]+://|javascript:|url\(", value or "", re.IGNORECASE), (tag, name, value)
    assert "url(" not in html and "@import" not in html and "://" not in html.replace("&lt;", "<").split("<style>")[0]


class TestHistoryLines:
    def test_real_runs_become_runs_in_order(self):
        lines = [line("healthy_two_workers"), line("no_worker"), line("queue_high_saturated")]
        history = parse_lines(lines, runs=100)
        assert [r.status for r in history.runs] == ["healthy", "down", "degraded"]
        healthy, down, _ = history.runs
        assert healthy.roundtrip_ms and healthy.roundtrip_ms > 0 and healthy.workers == 2
        assert down.roundtrip_ms is None and "celery_worker_down" in down.codes
        assert history.corrupt == 0 and history.other == 0

    def test_corrupt_lines_are_counted_and_skipped(self):
        torn = line("healthy_two_workers")[:40]  # a write cut short by a full disk
        lines = [line("healthy_two_workers"), torn, "", "[1, 2]", "null", '{"checked_at": "x"}', line("no_worker")]
        history = parse_lines(lines, runs=100)
        assert [r.status for r in history.runs] == ["healthy", "down"]
        assert history.corrupt == 4  # torn, a list, null, a run line without status; the blank line is nothing

    def test_remediation_lines_are_actions_and_unknown_kinds_are_skipped(self):
        lines = [
            line("no_worker"),
            json.dumps({"event": "remediation", "action": "restart worker w1", "at": "2026-11-24T11:59:00+00:00",
                        "outcome": "done", "message": "systemctl restart celery@w1"}),
            json.dumps({"event": "maintenance-window", "status": "healthy", "checked_at": "2026-11-24T11:59:30"}),
            line("healthy_two_workers"),
        ]
        history = parse_lines(lines, runs=100)
        assert [r.status for r in history.runs] == ["down", "healthy"]
        assert [a.action for a in history.actions] == ["restart worker w1"]
        assert history.actions[0].outcome == "done" and history.other == 1 and history.corrupt == 0

    def test_keeps_only_the_newest_runs(self):
        lines = [line("healthy_two_workers", checked_at=f"2026-11-24T10:{m:02d}:00+00:00") for m in range(30)]
        history = parse_lines(lines, runs=5)
        assert [r.checked_at[11:16] for r in history.runs] == ["10:25", "10:26", "10:27", "10:28", "10:29"]

    def test_several_targets_keep_each_targets_status(self):
        multi = report("healthy_two_workers")
        entry = history_entry({**verdicts_by_target(multi), "targets": {"main": {"status": "healthy"},
                                                                         HOSTILE: {"status": "down"}}})
        run = parse_lines([json.dumps(entry)], runs=1).runs[0]
        assert dict(run.targets) == {"main": "healthy", HOSTILE: "down"}


class TestHistoryFiles:
    def test_rotated_files_fill_the_runs_asked_for(self, tmp_path):
        for minute in range(6):  # oldest in .2, then .1, newest in history.jsonl
            name = {0: "history.jsonl.2", 1: "history.jsonl.2", 2: "history.jsonl.1", 3: "history.jsonl.1"}.get(
                minute, "history.jsonl")
            with open(tmp_path / name, "a") as handle:
                handle.write(line("healthy_two_workers", checked_at=f"2026-11-24T10:0{minute}:00+00:00") + "\n")
        history = read_history(tmp_path, runs=5)
        assert [r.checked_at[14:16] for r in history.runs] == ["01", "02", "03", "04", "05"]
        assert history.files == ("history.jsonl", "history.jsonl.1", "history.jsonl.2")
        assert len(read_history(tmp_path, runs=100).runs) == 6

    def test_history_written_and_rotated_by_the_writer_reads_back(self, tmp_path):
        entry = history_entry(verdict("healthy_two_workers"))
        size = len(json.dumps(entry, separators=(",", ":"))) + 1
        for minute in range(10):  # rotates every three lines
            append_line(tmp_path / "history.jsonl", {**entry, "checked_at": f"2026-11-24T10:0{minute}:00+00:00"},
                        max_bytes=size * 3, keep=3)
        history = read_history(tmp_path, runs=8)
        assert [r.checked_at[15] for r in history.runs] == list("23456789")

    def test_a_long_history_is_read_only_as_far_back_as_needed(self, tmp_path):
        one = line("healthy_two_workers") + "\n"
        (tmp_path / "history.jsonl").write_text("garbage\n" + one * 40_000)  # about 12 MB
        started = time.perf_counter()
        history = read_history(tmp_path, runs=100)
        took = time.perf_counter() - started
        assert len(history.runs) == 100 and history.corrupt == 0  # the garbage line is far back
        assert took < 0.5, took

    def test_an_endless_line_is_one_corrupt_line_read_once(self, tmp_path):
        one = line("healthy_two_workers") + "\n"
        (tmp_path / "history.jsonl").write_bytes(
            b"x" * 40_000_000 + b"\n" + one.encode() + b"y" * 3_000_000 + b"\n" + one.encode())
        (tmp_path / "history.jsonl.1").write_bytes(b"z" * 5_000_000)  # no newline at all
        started = time.perf_counter()
        history = read_history(tmp_path, runs=100)
        took = time.perf_counter() - started
        assert [r.status for r in history.runs] == ["healthy", "healthy"]
        assert history.corrupt == 2  # the 3 MB line and the rotated file's; the 40 MB one is past the bound
        assert took < 0.5, took

    def test_lines_across_block_boundaries_read_back_whole(self, tmp_path):
        documents = [{"status": "healthy", "checked_at": f"2026-11-24T10:{n % 60:02d}:00+00:00",
                      "codes": ["c" * (n * 997 % 70_000)]} for n in range(40)]
        (tmp_path / "history.jsonl").write_text("".join(json.dumps(d) + "\n" for d in documents))
        history = read_history(tmp_path, runs=100)
        assert history.corrupt == 0
        assert [r.checked_at for r in history.runs] == [d["checked_at"] for d in documents]

    def test_a_last_line_without_newline_is_still_read(self, tmp_path):
        (tmp_path / "history.jsonl").write_text(line("healthy_two_workers") + "\n" + line("no_worker"))
        assert [r.status for r in read_history(tmp_path, runs=10).runs] == ["healthy", "down"]


class TestRenderer:
    def test_current_verdict_reasons_probes_and_charts(self):
        lines = [line("healthy_two_workers"), line("healthy_two_workers"), line("no_worker")]
        down = verdict("no_worker")
        html = render(parse_lines(lines, runs=100), down, report("no_worker"))
        assert 'data-status="down"' in html and '<div class="status">down</div>' in html
        assert "celery_worker_down" in html and down["reasons"][0]["message"][:30] in html
        assert points(html, "timeline-chart", "run") == 3
        assert points(html, "roundtrip-chart") == 2 and points(html, "roundtrip-chart", "gap") == 1
        assert points(html, "queue-chart") == 3
        assert html.count('<tr class="probe ') == len(report("no_worker")["tests"])
        assert 'role="img"' in html and '<title id="roundtrip-chart-title">Round-trip latency</title>' in html
        assert_self_contained(html)

    def test_untrusted_names_and_messages_are_escaped(self):
        hostile_report = copy.deepcopy(report("queue_high_saturated"))
        for test in hostile_report["tests"]:
            measured = (test.get("metadata") or {}).get("measured") or {}
            for table in ("queues", "consumers", "roundtrip", "backlog"):
                if isinstance(measured.get(table), dict):
                    measured[table] = {HOSTILE: next(iter(measured[table].values()), None)}
            test["nodeid"] = test["nodeid"] + HOSTILE
        the_verdict = verdict_from_report(hostile_report)
        the_verdict["reasons"].append({"code": HOSTILE, "severity": "critical", "probe": HOSTILE, "message": HOSTILE})
        the_verdict["target"] = HOSTILE
        history = parse_lines([json.dumps({**history_entry(the_verdict), "codes": [HOSTILE],
                                           "checked_at": HOSTILE})], runs=10)
        html = render(history, the_verdict, hostile_report, notes=[HOSTILE])
        assert HOSTILE not in html and "<img" not in html
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
        assert_self_contained(html)

    def test_empty_history_and_no_verdict(self):
        html = render(parse_lines([], runs=100))
        assert 'data-status="unknown"' in html and "No probe run recorded yet." in html
        assert points(html, "timeline-chart", "run") == 0 and points(html, "roundtrip-chart") == 0
        assert "no runs yet" in html
        assert_self_contained(html)

    def test_one_run_without_a_verdict_file_shows_the_history_line(self):
        html = render(parse_lines([line("no_worker")], runs=100))
        assert 'data-status="down"' in html and "From the newest history line" in html
        assert points(html, "roundtrip-chart", "gap") == 1 and points(html, "queue-chart") == 1

    def test_skipped_lines_and_actions_are_shown(self):
        lines = [line("healthy_two_workers"), "{not json",
                 json.dumps({"event": "remediation", "action": "purge queue", "at": "2026-11-24T11:00:00Z"})]
        html = render(parse_lines(lines, runs=100), verdict("healthy_two_workers"))
        assert "1 line of history could not be read and were skipped" in html
        assert '<section id="actions">' in html and "purge queue" in html

    def test_several_targets_get_a_row_each(self):
        lines = [json.dumps({"checked_at": "2026-11-24T11:00:00+00:00", "status": "down",
                             "targets": {"main": "healthy", "reports": "down"}})] * 3
        overall = {"status": "down", "reasons": [], "targets": {"main": verdict("healthy_two_workers"),
                                                                 "reports": verdict("no_worker")}}
        html = render(parse_lines(lines, runs=100), overall)
        assert points(html, "timeline-chart", "run") == 9  # overall, main, reports × 3 runs
        assert '<section id="targets">' in html and ">reports<" in html

    def test_serve_asks_for_a_refresh(self):
        assert '<meta http-equiv="refresh" content="15">' in render(parse_lines([], runs=1), refresh_s=15)
        assert "http-equiv" not in render(parse_lines([], runs=1))


class TestServeCache:
    """serve renders the page once per new snapshot or history change, not once per request."""

    @staticmethod
    def append_run_line(history: Path) -> None:
        with open(history, "a") as handle:  # a new run appends a line
            handle.write(line("no_worker") + "\n")
        os.utime(history, ns=(time.time_ns(), time.time_ns() + 1_000_000))

    def test_a_burst_renders_once_and_a_change_renders_again(self, tmp_path):
        history = tmp_path / "history.jsonl"
        history.write_text(line("healthy_two_workers") + "\n")
        snapshot = SimpleNamespace(verdict=verdict("healthy_two_workers"), report=None, run=1, produced_mono=1.0)
        loop = SimpleNamespace(snapshot=snapshot, recent=[])
        page = StatusPage(loop, interval=15, report_dir=tmp_path)

        async def burst(count: int) -> set[bytes]:
            return set(await asyncio.gather(*(page.page() for _ in range(count))))

        async def scenario() -> None:
            pages = await burst(200)
            assert len(pages) == 1 and page.renders == 1
            self.append_run_line(history)
            changed = (await burst(50)).pop()
            assert page.renders == 2 and b'data-status="healthy"' in changed
            assert changed.count(b'<rect class="run ') == 2
            loop.snapshot = SimpleNamespace(verdict=verdict("no_worker"), report=None, run=2, produced_mono=2.0)
            assert b'data-status="down"' in (await burst(10)).pop() and page.renders == 3

        asyncio.run(scenario())

    def test_without_a_report_dir_the_loops_memory_is_the_history(self):
        entries = [history_entry(verdict(n)) for n in ("healthy_two_workers", "no_worker")]
        snapshot = SimpleNamespace(verdict=verdict("no_worker"), report=report("no_worker"), run=2, produced_mono=5.0)
        page = StatusPage(SimpleNamespace(snapshot=snapshot, recent=entries), interval=1, report_dir=None)
        html = asyncio.run(page.page()).decode()
        assert points(html, "timeline-chart", "run") == 2 and points(html, "roundtrip-chart", "gap") == 1
        assert '<meta http-equiv="refresh" content="5">' in html  # never faster than every 5 s
