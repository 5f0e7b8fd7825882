"""Property tests: the mapper never raises, and a bad setting is always one line, exit 64."""

from __future__ import annotations

import json
import math
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celery_probe.config.settings import SPECS, resolve_settings
from celery_probe.errors import ProbeUsageError
from celery_probe.verdict.mapper import STATUSES, verdict_from_report

REPORTS = Path(__file__).resolve().parents[1] / "reports"
REAL = [json.loads(p.read_text()) for p in sorted(REPORTS.glob("*.json"))]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


def assert_is_a_verdict(verdict: dict) -> None:
    assert verdict["status"] in STATUSES
    assert isinstance(verdict["reasons"], list)
    json.dumps(verdict, allow_nan=False) if _finite(verdict) else None


def _finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


class TestMapperProperties:
    """verdict_from_report never raises and always returns one of the four statuses."""

    @given(json_values)
    def test_any_json(self, value):
        assert_is_a_verdict(verdict_from_report(value))

    @given(st.sampled_from(REAL), st.lists(st.tuples(st.integers(0, 10**6), json_values), max_size=4))
    @settings(suppress_health_check=[HealthCheck.too_slow])
    def test_real_reports_with_random_subtrees_replaced(self, report, edits):
        mutated = json.loads(json.dumps(report))
        for position, value in edits:
            tests = mutated["tests"]
            test = tests[position % len(tests)]
            keys = sorted(test)
            test[keys[position % len(keys)]] = value
        verdict = verdict_from_report(mutated)
        assert_is_a_verdict(verdict)

    @given(st.sampled_from(REAL), st.integers(0, 20_000))
    def test_truncated_reports_are_not_json_or_unknown(self, report, cut):
        text = json.dumps(report)[:cut]
        try:
            loaded = json.loads(text)
        except ValueError:
            return  # the file loader reports it (tested in test_cli_errors)
        assert_is_a_verdict(verdict_from_report(loaded))


class TestSettingsProperties:
    """Any raw value either parses or raises ProbeUsageError with one line naming its source."""

    @given(st.sampled_from([s.name for s in SPECS if s.name != "probes"]), st.text(max_size=40))
    def test_random_text_for_any_setting(self, name, raw):
        try:
            resolve_settings({name: raw}, environ={}, pyproject=False)
        except ProbeUsageError as exc:
            message = str(exc)
            assert "\n" not in message and "(from " in message

    @given(st.sampled_from(["DEADLINE", "EXPECT_WORKERS", "PING_WINDOW", "ROUNDTRIP_SLOW", "QUEUE_THRESHOLD"]),
           st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                   min_size=1, max_size=12).filter(lambda s: not s.strip().replace(".", "", 1).isdigit()))
    def test_random_env_numbers(self, name, raw):
        try:
            resolve_settings({}, environ={f"CELERY_PROBE_{name}": raw}, pyproject=False)
        except ProbeUsageError as exc:
            assert f"CELERY_PROBE_{name}" in str(exc) and "\n" not in str(exc)
