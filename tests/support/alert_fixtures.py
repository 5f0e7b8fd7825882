"""Fixtures for the alerting tests, loaded for every module by the top conftest's ``pytest_plugins``.

Kept apart from :mod:`alert_servers` (which the tests import for its classes) so pytest can
load this module as a plugin before anything imports it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.alert_servers import HealthServer, HookSink, SmtpSink

# -------------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _no_alert_settings_from_the_developer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own webhook or SMTP password must never reach a test run."""
    for key in ("CELERY_PROBE_WEBHOOKS", "CELERY_PROBE_SMTP_PASSWORD"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    """A real SMTP server on a free loopback port."""
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def hooks() -> Iterator[HookSink]:
    """A real webhook receiver on a free loopback port."""
    sink = HookSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def health() -> Iterator[HealthServer]:
    """A real health endpoint serving a verdict the test switches."""
    server = HealthServer().start()
    yield server
    server.stop()
