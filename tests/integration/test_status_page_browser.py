"""The status page in headless Chromium, from the history of real probe runs.

Real runs against a real worker (healthy), then with the worker killed (down), write a
report dir; ``celery-probe report --html`` renders it, and a real ``celery-probe serve``
serves it at ``/``. Debian's Chromium (``/usr/bin/chromium``, installed by
``scripts/install-test-deps``) opens both, driven by Playwright, which never downloads a
browser of its own here. Every request the page makes is recorded: it must make none
beyond its own document. Screenshots go to tests/artifacts/ (ignored by git, kept by CI's
checkout); the test prints where.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from celery_probe.testing import CeleryWorker, wait_until
from tests.support.environment import APPS, ROOT, missing_system_program, run_cli
from tests.support.serving import HEALTH, ServeProcess

pytestmark = pytest.mark.redis_only  # a private redis-server; the page does not depend on --broker

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HEALTHY_RUNS = 3
TIMEOUT_MS = 20_000
PROBE_ARGS = ["-A", "probe_test_app", "--expect-workers", "1", "--deadline", "5", "--roundtrip-slow", "4"]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        missing_system_program(f"{CHROMIUM} is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_system_program("the playwright package is not installed")
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
                                          timeout=TIMEOUT_MS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def report_dir(module_redis, tmp_path_factory):
    """A report dir with the history of real runs: healthy ones, then one with the worker killed."""
    from tests.support.environment import app_env

    env = app_env(module_redis.url(0), module_redis.url(1))
    folder = tmp_path_factory.mktemp("status") / "reports"
    worker = CeleryWorker("probe_test_app", name="page@%h", env=env, pythonpath=[APPS]).start(timeout=40)
    try:
        for _ in range(HEALTHY_RUNS):
            result = run_cli("run", *PROBE_ARGS, "--report-dir", str(folder), env=env)
            assert result.code == 0, result.stdout + result.stderr
    finally:
        worker.kill()
        worker.close()
    result = run_cli("run", *PROBE_ARGS, "--deadline", "2", "--report-dir", str(folder), env=env)
    assert result.code == 2, result.stdout + result.stderr
    return folder, env


def history_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]


def open_recorded(browser, url: str):
    """A page at ``url`` with every request it makes recorded (the document's own included)."""
    context = browser.new_context(viewport={"width": 1100, "height": 900}, service_workers="block")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(url, wait_until="load")
    return context, page, requests


def check_page(page, runs: list[dict], shot: Path) -> None:
    """The verdict is visible and each chart is drawn with one mark per run (as the history says)."""
    banner = page.locator("#verdict")
    assert banner.is_visible() and banner.get_attribute("data-status") == "down"
    assert banner.locator(".status").inner_text().strip().lower() == "down"
    assert "celery_worker_down" in page.locator("#reasons").inner_text()
    for chart in ("#timeline-chart", "#roundtrip-chart", "#queue-chart"):
        box = page.locator(chart).bounding_box()
        assert box and box["width"] > 300 and box["height"] > 40, (chart, box)
    assert page.locator("#timeline-chart rect.run").count() == len(runs)
    assert page.locator("#timeline-chart rect.status-down").count() == sum(r["status"] == "down" for r in runs)
    with_trip = sum(r["roundtrip_ms"] is not None for r in runs)
    assert with_trip >= HEALTHY_RUNS  # the healthy runs' round trips
    assert page.locator("#roundtrip-chart circle.point").count() == with_trip
    assert page.locator("#roundtrip-chart path.gap").count() == len(runs) - with_trip
    assert page.locator("#queue-chart circle.point").count() == sum(r["queue_length"] is not None for r in runs)
    first_point = page.locator("#roundtrip-chart circle.point").first.bounding_box()
    assert first_point and first_point["width"] > 0  # drawn, not only present
    assert page.locator("#probes tr.probe").count() >= 5
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"status page screenshot: {shot}")


class TestStatusPageInChromium:
    def test_the_written_page_renders_offline(self, browser, report_dir):
        folder, _env = report_dir
        result = run_cli("report", "--html", "--report-dir", str(folder))
        assert result.code == 0, result.stderr
        index = folder / "index.html"
        runs = history_lines(folder)
        assert [r["status"] for r in runs] == ["healthy"] * HEALTHY_RUNS + ["down"]
        context, page, requests = open_recorded(browser, index.as_uri())
        try:
            check_page(page, runs, ARTIFACTS / "status-page-file.png")
        finally:
            context.close()
        assert requests == [index.as_uri()], requests  # no CDN, font, image or script fetched
        shutil.copy(index, ARTIFACTS / "status-page.html")

    def test_serve_serves_it_at_the_root(self, browser, report_dir):
        folder, env = report_dir
        args = [*PROBE_ARGS[:4], "--deadline", "2", "--interval", "60", "--report-dir", str(folder)]
        with ServeProcess(*args, env=env, cwd=folder.parent) as server:
            wait_until(lambda: server.health()["status"] == "down", timeout=30, what="serve's first verdict")
            reply = server.get("/")
            assert reply.status == 200 and reply.headers["content-type"] == "text/html; charset=utf-8"
            assert server.get(HEALTH).status == 200  # the other routes are unchanged
            origin = f"http://127.0.0.1:{server.port}"
            runs = history_lines(folder)  # serve's own run added a line
            context, page, requests = open_recorded(browser, origin + "/")
            try:
                check_page(page, runs, ARTIFACTS / "status-page-served.png")
                assert len(runs) >= HEALTHY_RUNS + 2
            finally:
                context.close()
            assert requests and all(url.startswith(origin + "/") for url in requests), requests
