"""``--flower-url`` links, the pure part: the base URL, which reason links where, and what is shown."""

from __future__ import annotations

import json

import pytest

from celery_probe.verdict.flower import (
    add_flower_links,
    flower_base,
    flower_url_problem,
    safe_links,
)

# ------------------------------------------------------------------------------ pure parts


class TestBase:
    """The base every link is built on never carries credentials."""

    @pytest.mark.parametrize(("url", "base"), [
        ("http://flower:5555", "http://flower:5555"),
        ("https://ops:pw@flower.example/", "https://flower.example"),
        ("HTTPS://u:p@Flower.Example:8443/ops/flower/", "https://flower.example:8443/ops/flower"),
        ("http://[::1]:5555/", "http://[::1]:5555"),
    ])
    def test_credentials_and_trailing_slash_dropped(self, url, base):
        assert flower_base(url) == base

    @pytest.mark.parametrize(("url", "words"), [
        ("ftp://flower/", "http:// or https://"),
        ("flower:5555", "http:// or https://"),
        ("http:///x", "no host"),
        ("http://flower:port/", "cannot be parsed"),
        ("http://flower/?x=1", "query or fragment"),
        ("http://flower/#top", "query or fragment"),
        ("http://flo wer/", "white space"),
    ])
    def test_unusable_urls_say_why(self, url, words):
        assert words in (flower_url_problem(url) or "")
        assert flower_base(url) is None


def _verdict(*reasons: tuple[str, str]) -> dict:
    return {"status": "degraded", "workers": {"a@h": {}, "b@h": {}},
            "reasons": [{"code": code, "severity": "degraded", "message": msg} for code, msg in reasons]}


class TestReasonLinks:
    """Each reason links to the page that answers the question it raises."""

    def test_pages_by_code(self):
        verdict = add_flower_links(_verdict(
            ("celery_worker_down", "no worker answered ping"),
            ("celery_workers_missing", "1 of 2 expected workers answered: a@h"),
            ("celery_worker_unresponsive", "answered ping but not inspect: b@h"),
            ("celery_worker_drift", "a@h consumes x but matches none; b@h does not consume y"),
            ("celery_queue_high", "queue backlog at or above threshold: celery=5"),
            ("celery_queue_unconsumed", "messages waiting where no worker consumes: x=1"),
            ("celery_roundtrip_slow", "round trip slower than 1000 ms: celery=1200 ms"),
        ), "https://u:pw@flower.example/f/")
        links = [r.get("link") for r in verdict["reasons"]]
        assert links == [
            "https://flower.example/f/workers",
            "https://flower.example/f/workers",  # names those that answered, not the missing one
            "https://flower.example/f/worker/b%40h",
            "https://flower.example/f/workers",  # two workers at fault
            "https://flower.example/f/broker",
            "https://flower.example/f/broker",
            None,
        ]
        assert verdict["links"] == {
            "flower": "https://flower.example/f/",
            "workers_page": "https://flower.example/f/workers",
            "queues": "https://flower.example/f/broker",
            "workers": {"a@h": "https://flower.example/f/worker/a%40h",
                        "b@h": "https://flower.example/f/worker/b%40h"},
        }
        assert "pw" not in json.dumps(verdict)

    def test_a_name_inside_another_is_not_a_mention(self):
        verdict = {"workers": {"a@h": {}, "a@h2": {}}, "reasons": [
            {"code": "celery_worker_unresponsive", "message": "answered ping but not inspect: a@h2"}]}
        assert add_flower_links(verdict, "http://f")["reasons"][0]["link"] == "http://f/worker/a%40h2"

    @pytest.mark.parametrize("url", [None, "", 5, "javascript:alert(1)", "ftp://f/", {"x": 1}])
    def test_a_foreign_report_value_adds_nothing(self, url):
        verdict = add_flower_links(_verdict(("celery_worker_down", "x")), url)
        assert "links" not in verdict and "link" not in verdict["reasons"][0]

    def test_links_from_elsewhere_are_filtered(self):
        assert safe_links({"flower": "javascript:alert(1)", "queues": "http://u:pw@f/broker",
                           "workers": {"a": "http://f/worker/a", "b": "data:text/html,x"}}) == {
            "queues": "http://f/broker", "workers": {"a": "http://f/worker/a"}}


class TestShown:
    """Text output, mail templates and several-target reports carry the links too."""

    def test_text_output_shows_dashboard_and_reason_pages(self):
        from celery_probe.present.text import render_text

        verdict = add_flower_links({**_verdict(("celery_queue_high", "celery=5")), "status": "degraded"},
                                   "http://u:pw@f:5555")
        text = render_text(verdict, colour=False)
        assert "  flower     http://f:5555/" in text
        assert "  ! celery_queue_high [degraded]: celery=5\n      see http://f:5555/broker" in text
        assert "pw" not in text

    def test_flower_placeholder_in_mail_templates(self):
        from celery_probe.alerting.template import check_template

        assert check_template("Flower: $flower", "test template").template == "Flower: $flower"

    def test_each_target_links_to_its_own_flower(self):
        from celery_probe.verdict.mapper import verdicts_by_target

        def failing(target: str) -> dict:
            return {"nodeid": f"probes/test_workers.py::test_workers_answer_ping[{target}]", "outcome": "failed",
                    "call": {"outcome": "failed", "crash": {"message": "Failed: no worker answered ping"}},
                    "metadata": {"probe": {"severity": "critical", "code": "celery_worker_down",
                                           "target": target}}}

        report = {"created": 0, "duration": 1, "tests": [failing("a"), failing("b")], "celery_probe": {
            "targets": ["a", "b"],
            "target_details": {"a": {"target": "A", "flower": "http://fa"}, "b": {"target": "B"}}}}
        verdict = verdicts_by_target(report)
        assert verdict["targets"]["a"]["links"]["workers_page"] == "http://fa/workers"
        assert "links" not in verdict["targets"]["b"]
        assert {r["target"]: r.get("link") for r in verdict["reasons"]} == {"a": "http://fa/workers", "b": None}


class TestOpsAlerts:
    """Ops-alerts about a worker or a queue link to the page the verdict's reasons use."""

    def test_alerts_link_like_the_reasons(self):
        from celery_probe.present.ops_alerts import get_ops_alerts

        verdict = add_flower_links({**_verdict(
            ("celery_queue_high", "queue backlog at or above threshold: celery=5"),
            ("celery_worker_unresponsive", "answered ping but not inspect: b@h"),
            ("celery_roundtrip_slow", "round trip slower than 1000 ms: celery=1200 ms"),
        ), "status": "degraded"}, "https://u:pw@flower.example/f/")
        existing = {"code": "sync_health", "severity": "high", "message": "behind"}
        document = get_ops_alerts(verdict, alerts=[existing])
        assert document["alerts"][0] == existing  # untouched: no link added to others' alerts
        assert {a["code"]: a.get("link") for a in document["alerts"][1:]} == {
            "celery_queue_high": "https://flower.example/f/broker",
            "celery_worker_unresponsive": "https://flower.example/f/worker/b%40h",
            "celery_roundtrip_slow": None,
        }
        assert "link" not in document["alerts"][3]  # no page fits: no key, not null
        assert "pw" not in json.dumps(document)

    def test_down_alert_links_to_the_workers_page(self):
        from celery_probe.present.ops_alerts import get_ops_alerts

        verdict = add_flower_links({"status": "down", "workers": {}, "reasons": [
            {"code": "celery_broker_unreachable", "severity": "critical", "message": "refused"}]}, "http://f")
        alerts = get_ops_alerts(verdict)["alerts"]
        assert [(a["code"], a.get("link")) for a in alerts] == [
            ("celery_worker_down", "http://f/workers"), ("celery_broker_unreachable", None)]

    @pytest.mark.parametrize("links", [
        None, {}, {"flower": "javascript:alert(1)"}, {"flower": 5}, "http://f/",
    ])
    def test_without_a_usable_flower_no_alert_has_a_link_key(self, links):
        from celery_probe.present.ops_alerts import get_ops_alerts

        verdict = {**_verdict(("celery_queue_high", "celery=5")), "links": links}
        assert all("link" not in alert for alert in get_ops_alerts(verdict)["alerts"])

    def test_credentials_in_a_verdicts_links_never_reach_an_alert(self):
        from celery_probe.present.ops_alerts import get_ops_alerts

        verdict = {**_verdict(("celery_queue_high", "celery=5")), "links": {"flower": "http://u:pw@f:1/x/"}}
        assert get_ops_alerts(verdict)["alerts"][0]["link"] == "http://f:1/x/broker"
