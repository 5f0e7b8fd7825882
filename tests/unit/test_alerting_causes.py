"""The pure composition of an alert: its root cause, subject, impact, steps and folded reasons.

Real mails and webhooks from real runs are in tests/integration/test_alerting_cron.py::TestRootCause;
here the wording itself, one behaviour per test, from verdicts shaped like real ones.
"""

from __future__ import annotations

import pytest

from celery_probe.alerting.causes import CAUSES, root_cause
from celery_probe.alerting.channel import Wording
from celery_probe.alerting.state import Notification
from celery_probe.alerting.template import (
    DEFAULT_PROBLEM,
    MailTemplates,
    fields,
    render_body,
    short_text,
)
from celery_probe.alerting.webhook import Webhook, payload_for

BROKER = "broker redis://127.0.0.1:6390/0 did not answer: OperationalError: Error 111 connecting to 127.0.0.1:6390."
CONSEQUENCES = ["celery_backlog_unreadable", "celery_queue_high", "celery_queue_unconsumed",
                "celery_roundtrip_failed", "celery_roundtrip_slow", "celery_worker_down",
                "celery_worker_unresponsive", "celery_workers_missing", "celery_workers_saturated"]


def reason(code: str, severity: str, message: str) -> dict[str, str]:
    return {"code": code, "severity": severity, "message": message}


def broker_down() -> dict:
    """What a real run says when the broker refuses: one cause, nine consequences."""
    return {"status": "down", "worker_alive": False, "target": "app proj on redis://127.0.0.1:6390/0",
            "reasons": [reason("celery_broker_unreachable", "critical", BROKER)]
            + [reason(code, "critical" if code in ("celery_worker_down", "celery_roundtrip_failed",
                                                    "celery_queue_unconsumed") else "degraded",
                      f"not attempted: {BROKER}") for code in CONSEQUENCES]}


def note(verdict: dict, event: str = "problem") -> Notification:
    return Notification(event=event, status=verdict["status"], previous_status="healthy",
                        created_at="2026-11-24T08:51:05+00:00", since="2026-11-24T08:51:05+00:00", verdict=verdict)


def values(verdict: dict, event: str = "problem", **wording) -> dict[str, str]:
    w = Wording(**{"service": "celery-worker", "broker_service": "redis-server", **wording})
    return w.values(note(verdict, event))


class TestRootCause:
    def test_consequences_are_never_the_cause(self):
        assert root_cause(broker_down())["code"] == "celery_broker_unreachable"

    def test_the_status_severity_wins_over_an_earlier_milder_reason(self):
        verdict = {"status": "down", "reasons": [reason("celery_queue_high", "degraded", "q=5"),
                                                 reason("celery_worker_down", "critical", "no worker")]}
        assert root_cause(verdict)["code"] == "celery_worker_down"

    def test_only_consequences_means_no_cause(self):
        verdict = {"status": "down", "reasons": [reason("celery_worker_down", "critical", "not attempted: x")]}
        assert root_cause(verdict) is None
        assert values(verdict)["subject"] == "[celery-probe CRITICAL] Celery DOWN"


class TestSubjectFollowsTheCause:
    @pytest.mark.parametrize("code, severity, status, title", [
        ("celery_broker_unreachable", "critical", "down", "[celery-probe CRITICAL] Celery broker UNREACHABLE"),
        ("celery_backend_unreachable", "critical", "down", "[celery-probe CRITICAL] Celery result backend UNREACHABLE"),
        ("celery_worker_down", "critical", "down", "[celery-probe CRITICAL] Celery worker DOWN"),
        ("celery_queue_unconsumed", "critical", "down", "[celery-probe CRITICAL] Celery queue UNCONSUMED"),
        ("celery_roundtrip_failed", "critical", "down", "[celery-probe CRITICAL] Celery tasks NOT PROCESSED"),
        ("celery_workers_saturated", "degraded", "degraded", "[celery-probe WARNING] Celery workers SATURATED"),
        ("celery_queue_high", "degraded", "degraded", "[celery-probe WARNING] Celery queue HIGH"),
        ("celery_probe_error", "error", "unknown", "[celery-probe UNKNOWN] Celery health UNKNOWN"),
        ("my_own_probe_failed", "critical", "down", "[celery-probe CRITICAL] Celery DOWN"),
        ("my_own_check_slow", "degraded", "degraded", "[celery-probe WARNING] Celery DEGRADED"),
    ])
    def test_subject(self, code, severity, status, title):
        assert values({"status": status, "reasons": [reason(code, severity, "m")]})["subject"] == title

    def test_a_reminder_says_still(self):
        assert values(broker_down(), "repeat")["subject"] == "[celery-probe CRITICAL] Celery broker still UNREACHABLE"

    def test_a_cause_milder_than_the_status_gets_the_status_wording(self):
        """A remote verdict that is down with only a degraded reason must not read "queue HIGH"."""
        verdict = {"status": "down", "reasons": [reason("celery_queue_high", "degraded", "m")]}
        assert values(verdict)["subject"] == "[celery-probe CRITICAL] Celery DOWN"

    def test_what_a_verdict_says_never_reaches_the_subject(self):
        verdict = {"status": "down", "reasons": [reason("x\r\nBcc: a@b", "critical", "Subject: hijacked")]}
        assert values(verdict)["subject"] == "[celery-probe CRITICAL] Celery DOWN"


class TestBrokerOutage:
    def test_steps_say_check_the_broker_and_not_to_restart_the_workers(self):
        steps = values(broker_down())["steps"]
        assert steps.startswith("1. Check the broker service: systemctl status redis-server\n")
        assert "Do not restart the workers for this" in steps
        assert "systemctl restart" not in steps and "celery-worker" not in steps

    def test_consequences_are_folded_into_one_line(self):
        lines = values(broker_down())["reasons"].splitlines()
        assert lines == [f"- celery_broker_unreachable [critical]: {BROKER}",
                         "- and 9 probes not attempted because of it: " + ", ".join(CONSEQUENCES)]

    def test_two_causes_fold_because_of_the_above(self):
        verdict = broker_down()
        verdict["reasons"].insert(1, reason("celery_backend_unreachable", "critical", "backend did not answer"))
        assert values(verdict)["reasons"].splitlines()[-1].startswith("- and 9 probes not attempted because of the above")

    def test_the_headline_and_impact_blame_the_broker(self):
        v = values(broker_down())
        assert v["headline"].startswith("The Celery broker does not answer")
        assert v["cause"] == "celery_broker_unreachable"
        assert v["impact"].startswith("- The application cannot queue new tasks")
        assert "worker is not responding" not in render_body(MailTemplates(), note(broker_down()), v)


class TestWorkerDown:
    def test_steps_restart_the_worker(self):
        verdict = {"status": "down", "worker_alive": False,
                   "reasons": [reason("celery_worker_down", "critical", "no worker answered ping (listened 336 ms)"),
                               reason("celery_roundtrip_failed", "critical", "not attempted: no worker answered")]}
        v = values(verdict)
        assert v["steps"].splitlines() == [
            "1. Check the worker service: systemctl status celery-worker",
            "2. Check its logs: journalctl -u celery-worker -n 100",
            "3. Restart it if needed: systemctl restart celery-worker",
            "4. Check that it uses the same broker and virtual host or database as Target above",
        ]
        assert v["reasons"].splitlines()[-1] == "- and 1 probe not attempted because of it: celery_roundtrip_failed"


class TestImpact:
    def test_generic_by_default(self):
        impact = values({"status": "down", "reasons": [reason("celery_worker_down", "critical", "m")]})["impact"]
        assert impact == ("- Background tasks are not being processed\n"
                          "- Work the application queues waits in the broker until a worker returns")

    @pytest.mark.parametrize("status, code, severity, lead", [
        ("down", "celery_worker_down", "critical", "Affected"),
        ("degraded", "celery_queue_high", "degraded", "Delayed"),
        ("unknown", "celery_probe_error", "error", "Possibly affected"),
    ])
    def test_the_operators_words_come_first(self, status, code, severity, lead):
        verdict = {"status": status, "reasons": [reason(code, severity, "m")]}
        impact = values(verdict, impact="invoices and order e-mails")["impact"]
        assert impact.splitlines()[0] == f"- {lead}: invoices and order e-mails"

    def test_recovery(self):
        assert values({"status": "healthy", "reasons": []}, "recovery")["impact"] == \
            "- none: background tasks are processed again"


class TestEveryCauseAgreesWithItself:
    @pytest.mark.parametrize("code", sorted(CAUSES))
    def test_wording_is_complete(self, code):
        cause = CAUSES[code]
        assert cause.state.isupper() and cause.headline.endswith(".") and cause.impact and cause.steps
        rendered = render_body(MailTemplates(), note({"status": "down", "reasons": []}),
                               values({"status": "down", "reasons": []}))
        assert "$" not in rendered

    def test_the_default_template_uses_the_steps(self):
        assert "Action required:\n$steps\n" in DEFAULT_PROBLEM


class TestWebhooks:
    def test_generic_payload_carries_cause_impact_and_steps(self):
        wording = Wording(service="celery-worker", broker_service="redis-server", impact="invoices")
        payload = payload_for(Webhook("http://127.0.0.1:1/hook"), note(broker_down()), wording)
        assert payload["title"] == "[celery-probe CRITICAL] Celery broker UNREACHABLE"
        assert payload["cause"] == "celery_broker_unreachable"
        assert payload["impact"][0] == "Affected: invoices"
        assert payload["steps"][0] == "Check the broker service: systemctl status redis-server"
        assert len(payload["reasons"]) == 10  # the machine-readable list stays complete

    @pytest.mark.parametrize("form", ["slack", "telegram"])
    def test_chat_text_is_folded_and_says_what_to_do(self, form):
        wording = Wording(service="celery-worker", broker_service="redis-server")
        text = payload_for(Webhook("http://127.0.0.1:1/hook", form, "1"), note(broker_down()), wording)["text"]
        assert text.startswith("[celery-probe CRITICAL] Celery broker UNREACHABLE\n")
        assert text.count("not attempted") == 1
        assert "What to do:\n1. Check the broker service: systemctl status redis-server" in text

    def test_short_text_of_a_recovery_has_no_steps(self):
        v = values({"status": "healthy", "reasons": []}, "recovery")
        assert "What to do" not in short_text(note({"status": "healthy", "reasons": []}, "recovery"), v)


def test_fields_are_all_placeholders():
    from celery_probe.alerting.template import PLACEHOLDERS

    assert set(fields(note(broker_down()), label=None, service="s", broker_service="b", hostname="h")) == \
        set(PLACEHOLDERS)
