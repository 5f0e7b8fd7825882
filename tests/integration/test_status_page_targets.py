"""The status page of runs with several targets: a round-trip and a queue line per target.

The history is written by real ``celery-probe run --targets`` processes against two private
Redis servers with a real worker each: two runs with both workers, then one with the
``reports`` worker stopped. The renderer tests read those real lines (pure, no browser);
lines of older versions, caps and hostile names are those real lines edited.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from celery_probe.present.status_page import MAX_SERIES, render_status_page
from celery_probe.storage.history import Figures, from_entries, parse_lines
from celery_probe.testing import CeleryWorker, RedisServer
from tests.support.environment import APPS, app_env, run_cli

pytestmark = pytest.mark.redis_only

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
RUNS_BOTH = 2  # runs with both workers up; then one with the reports worker stopped


@pytest.fixture(scope="module")
def multi_history(tmp_path_factory):
    """The report dir of three real two-target runs, and its history lines (parsed JSON)."""
    folder = tmp_path_factory.mktemp("targets")
    reports = folder / "reports"
    with RedisServer() as main, RedisServer() as other:
        targets = folder / "targets.toml"
        targets.write_text("".join(
            f'[targets.{name}]\nbroker = "{redis.url(0)}"\nbackend = "{redis.url(1)}"\nexpect-workers = 1\n'
            for name, redis in (("main", main), ("reports", other))))
        args = ["run", "--targets", str(targets), "--deadline", "2", "--report-dir", str(reports)]
        workers = [CeleryWorker("probe_test_app", name=f"{name}@%h", env=app_env(redis.url(0), redis.url(1)),
                                pythonpath=[APPS]) for name, redis in (("main", main), ("reports", other))]
        try:
            for worker in workers:
                worker.start(timeout=40)
            for _ in range(RUNS_BOTH):
                result = run_cli(*args, cwd=folder)
                assert result.code == 0, result.stdout + result.stderr
            workers[1].close()
            result = run_cli(*args, cwd=folder)
            assert result.code == 2, result.stdout + result.stderr
        finally:
            for worker in workers:
                worker.close()
    lines = (reports / "history.jsonl").read_text().splitlines()
    return reports, lines


def chart(html: str, chart_id: str) -> str:
    found = re.search(rf'<svg id="{chart_id}".*?</svg>', html, re.DOTALL)
    assert found, f"no chart {chart_id}"
    return found.group(0)


def series_marks(html: str, chart_id: str) -> dict[str, tuple[int, int]]:
    """``{legend name: (points, crosses)}`` of each series of a chart."""
    svg = chart(html, chart_id)
    names = dict(re.findall(r'<g class="legend-item" data-series="(\d+)"><title>(.*?)</title>', svg))
    marks = {}
    for index, body in re.findall(r'<g class="series" data-series="(\d+)">(.*?)</g>', svg, re.DOTALL):
        marks[names[index]] = (body.count('<circle class="series-point"'), body.count('<path class="series-gap"'))
    return marks


def render(lines, verdict=None, runs=100) -> str:
    return render_status_page(parse_lines(lines, runs=runs), verdict, None, now=NOW, runs=runs)


def renamed(line: str, names: dict[str, str]) -> str:
    """A real line with its targets renamed (``{old: new}``), figures and statuses kept."""
    entry = json.loads(line)
    for key in ("targets", "target_figures"):
        entry[key] = {names.get(name, name): value for name, value in entry[key].items()}
    return json.dumps(entry)


class TestHistoryLines:
    """Each line of a run with targets carries every target's figures, beside the old shape."""

    def test_per_target_figures_beside_the_statuses(self, multi_history):
        _folder, lines = multi_history
        entries = [json.loads(line) for line in lines]
        assert [e["targets"] for e in entries] == [{"main": "healthy", "reports": "healthy"}] * RUNS_BOTH + [
            {"main": "healthy", "reports": "down"}]  # unchanged: readers of older lines keep working
        for entry in entries:
            assert set(entry["target_figures"]) == {"main", "reports"}
            for figures in entry["target_figures"].values():
                assert set(figures) == {"roundtrip_ms", "queue_length", "workers"}
        healthy = entries[0]["target_figures"]["reports"]
        assert healthy["roundtrip_ms"] > 0 and healthy["workers"] == 1 and healthy["queue_length"] == 0
        down = entries[-1]["target_figures"]["reports"]
        assert down["roundtrip_ms"] is None and down["workers"] == 0
        assert entries[-1]["target_figures"]["main"]["roundtrip_ms"] > 0
        assert max(len(line) for line in lines) < 700, max(len(line) for line in lines)  # still one small line

    def test_read_back_as_figures(self, multi_history):
        _folder, lines = multi_history
        runs = parse_lines(lines, runs=100).runs
        assert [dict(r.targets)["reports"] for r in runs] == ["healthy"] * RUNS_BOTH + ["down"]
        last = dict(runs[-1].target_figures)
        assert isinstance(last["main"], Figures) and last["main"].workers == 1
        assert last["reports"] == Figures(roundtrip_ms=None, queue_length=0, workers=0)


class TestRenderer:
    """One line per target on the round-trip and queue charts, with a legend."""

    def test_one_series_per_target_with_a_mark_per_run(self, multi_history):
        _folder, lines = multi_history
        html = render(lines)
        assert series_marks(html, "roundtrip-chart") == {"main": (3, 0), "reports": (RUNS_BOTH, 1)}
        assert series_marks(html, "queue-chart") == {"main": (3, 0), "reports": (3, 0)}
        trip = chart(html, "roundtrip-chart")
        assert trip.count('<polyline class="series-line"') == 2  # main's three points, reports' two
        assert '<title id="roundtrip-chart-title">Round-trip latency</title>' in trip
        assert "one line per target" in trip and "reports: latest none" in trip
        assert ": reports: no round trip completed</title>" in trip
        assert "<circle class=\"point\"" not in html and "recorded per run for a single target only" not in html
        assert 'id="series-note' not in html  # nothing left out, nothing old

    def test_the_runs_table_has_each_targets_figures(self, multi_history):
        _folder, lines = multi_history
        html = render(lines)
        table = html[html.index('<details id="runs">'):]
        newest = table.split("<tr>")[2]  # after the header row
        assert "main: healthy; reports: down" in newest and "reports: -" in newest and "main: 1; reports: 0" in newest

    def test_lines_without_figures_still_render_and_are_counted(self, multi_history):
        _folder, lines = multi_history
        old = [json.dumps({k: v for k, v in json.loads(line).items() if k != "target_figures"}) for line in lines]
        html = render(old[:2] + lines[2:])
        assert series_marks(html, "roundtrip-chart") == {"main": (1, 0), "reports": (0, 1)}
        assert "2 runs were recorded without per-target figures" in html
        assert html.count('<rect class="run ') == 3 * 3  # the timeline is as before: overall and a row each

    def test_single_target_runs_in_the_same_history_are_a_series(self, multi_history):
        _folder, lines = multi_history
        single = json.loads(lines[0])
        for key in ("targets", "target_figures"):
            single.pop(key)
        single.update(roundtrip_ms=4.5, queue_length=2)
        html = render([json.dumps(single), *lines])
        assert series_marks(html, "queue-chart") == {"main": (3, 0), "reports": (3, 0), "single target": (1, 0)}

    def test_at_most_twelve_targets_drawn_the_rest_named(self, multi_history):
        _folder, lines = multi_history
        names = [f"t{n:02d}" for n in range(MAX_SERIES + 3)]
        many = []
        for line in lines:
            entry = json.loads(line)
            figures = entry["target_figures"]["main"]
            entry["targets"] = {name: "healthy" for name in names}
            entry["target_figures"] = {name: figures for name in names}
            many.append(json.dumps(entry))
        html = render(many)
        marks = series_marks(html, "roundtrip-chart")
        assert list(marks) == names[:MAX_SERIES] and set(marks.values()) == {(3, 0)}
        assert "3 more targets are not drawn on the charts (at most 12 lines each): t12, t13, t14." in html
        assert "; 3 more targets not drawn</desc>" in chart(html, "queue-chart")

    def test_a_new_set_of_target_names_on_every_line_renders_in_time(self, multi_history):
        _folder, lines = multi_history
        entry = json.loads(lines[0])
        figures = entry["target_figures"]["main"]
        many = []
        for run in range(600):  # 30,000 names: a hostile or very churned history
            names = [f"r{run}-t{n}" for n in range(50)]
            many.append(json.dumps({**entry, "targets": {name: "healthy" for name in names},
                                    "target_figures": {name: figures for name in names}}))
        started = time.perf_counter()
        html = render(many, runs=600)
        took = time.perf_counter() - started
        assert list(series_marks(html, "roundtrip-chart")) == [f"r599-t{n}" for n in range(MAX_SERIES)]
        assert f"{600 * 50 - MAX_SERIES} more targets are not drawn" in html
        assert took < 3, took

    def test_the_newest_runs_targets_come_first(self, multi_history):
        _folder, lines = multi_history
        html = render([renamed(lines[0], {"main": "gone"}), *lines[1:]])
        assert list(series_marks(html, "roundtrip-chart")) == ["main", "reports", "gone"]

    def test_target_names_are_escaped(self, multi_history):
        _folder, lines = multi_history
        long_name = "x" * 60
        html = render([renamed(line, {"main": HOSTILE, "reports": long_name}) for line in lines])
        assert HOSTILE not in html and "<img" not in html
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in chart(html, "roundtrip-chart")
        assert f"<title>{long_name}</title>" in html and ">" + "x" * 23 + "…</text>" in html  # legend cut short
        assert series_marks(html, "roundtrip-chart")[long_name] == (RUNS_BOTH, 1)

    def test_serve_without_a_report_dir_draws_the_same(self, multi_history):
        """serve keeps ``history_entry`` dicts in memory: the same figures reach the page."""
        from celery_probe.serve.status_view import StatusPage

        _folder, lines = multi_history
        entries = [json.loads(line) for line in lines]
        assert len(from_entries(entries, runs=10).runs[-1].target_figures) == 2
        snapshot = SimpleNamespace(verdict=None, report=None, run=3, produced_mono=1.0)
        page = StatusPage(SimpleNamespace(snapshot=snapshot, recent=entries), interval=5, report_dir=None)
        html = asyncio.run(page.page()).decode()
        assert series_marks(html, "roundtrip-chart") == {"main": (3, 0), "reports": (RUNS_BOTH, 1)}


class TestReportCommand:
    def test_report_html_of_the_real_report_dir(self, multi_history):
        folder, _lines = multi_history
        result = run_cli("report", "--html", "--report-dir", str(folder))
        assert result.code == 0 and "(3 runs)" in result.stderr, result.stderr
        html = (folder / "index.html").read_text()
        assert 'data-status="down"' in html
        assert series_marks(html, "roundtrip-chart") == {"main": (3, 0), "reports": (RUNS_BOTH, 1)}
        assert series_marks(html, "queue-chart") == {"main": (3, 0), "reports": (3, 0)}

