"""Judging a worker's evidence files, and reading worker-check's command line: pure cases."""

from __future__ import annotations

from typing import Any

import pytest

from celery_probe.worker.check_cli import CheckArgs, UsageError, parse_args
from celery_probe.worker.evidence import (
    CONNECTING,
    LIVENESS,
    READINESS,
    RUNNING,
    busy_record,
    liveness_record,
    readiness_problem,
    readiness_record,
)
from celery_probe.worker.judge import EXIT_FAILED, EXIT_NO_EVIDENCE, EXIT_OK, judge

NOW = 1_800_000_000.0


def live(age: float = 1.0, *, state: str = RUNNING, busy_for: float | None = None,
         interval: float = 5.0) -> dict[str, Any]:
    busy = busy_record("proj.report", "abc", NOW - busy_for) if busy_for is not None else None
    return liveness_record(worker="celery@web-1", pid=7, pool="solo", interval=interval, now=NOW - age,
                           state=state, since=NOW - 100, busy=busy)


def ready(age: float = 1.0, *, problem: str | None = None, busy_for: float | None = None) -> dict[str, Any]:
    busy = busy_record("proj.report", "abc", NOW - busy_for) if busy_for is not None else None
    return readiness_record(worker="celery@web-1", pid=7, interval=5.0, now=NOW - age, ready=problem is None,
                            reason=problem, not_ready_since=NOW - 42, expected=["celery", "emails"],
                            consumed=["celery"] if problem else ["celery", "emails"],
                            connected_at=NOW - 500, broker_ok_at=NOW - 1, broker_check="redis PING", busy=busy)


class TestLiveness:
    """Liveness holds while the loop wrote recently, or the broker is away, or solo is busy."""

    def test_fresh_passes(self):
        result = judge(live(2), LIVENESS, now=NOW, max_age=60)
        assert result.code == EXIT_OK and result.line == "liveness: ok, updated 2.0s ago by celery@web-1 pid 7"

    def test_stale_fails_with_age_limit_and_writer(self):
        result = judge(live(95), LIVENESS, now=NOW, max_age=60)
        assert result.code == EXIT_FAILED
        assert result.line == "liveness: stale for 95s (max age 60s), last update by celery@web-1 pid 7"

    def test_default_max_age_is_six_intervals(self):
        assert judge(live(29, interval=5), LIVENESS, now=NOW).ok
        assert not judge(live(31, interval=5), LIVENESS, now=NOW).ok

    def test_connecting_passes_however_old(self):
        result = judge(live(900, state=CONNECTING), LIVENESS, now=NOW, max_age=60)
        assert result.ok and "connecting to the broker for 100s" in result.line

    def test_a_warm_shutdown_passes_however_old(self):
        result = judge(live(900, state="stopping"), LIVENESS, now=NOW, max_age=60)
        assert result.ok and "stopping for 100s (a warm shutdown waits for its tasks)" in result.line

    def test_a_stopped_worker_whose_pid_is_gone_fails_at_once(self):
        result = judge(live(0.2, state="stopping"), LIVENESS, now=NOW, max_age=60, pid_alive=lambda pid: False)
        assert result.code == EXIT_FAILED and result.line.startswith("liveness: stopped and the worker's pid 7")

    def test_connecting_with_its_pid_gone_fails(self):
        result = judge(live(900, state=CONNECTING), LIVENESS, now=NOW, max_age=60, pid_alive=lambda pid: False)
        assert result.code == EXIT_FAILED and "pid 7 is gone" in result.line

    def test_fresh_evidence_needs_no_pid_check(self):
        assert judge(live(1), LIVENESS, now=NOW, max_age=60, pid_alive=lambda pid: False).ok

    def test_busy_solo_passes_up_to_max_busy(self):
        result = judge(live(300, busy_for=300), LIVENESS, now=NOW, max_age=60, max_busy=600)
        assert result.ok and "busy in task 'proj.report' for 300s (max busy 600s)" in result.line

    def test_busy_beyond_max_busy_fails_naming_the_task(self):
        result = judge(live(700, busy_for=700), LIVENESS, now=NOW, max_age=60, max_busy=600)
        assert result.code == EXIT_FAILED
        assert result.line.startswith("liveness: busy in task 'proj.report' (abc) for 700s (max busy 600s)")

    def test_max_busy_defaults_to_max_age(self):
        assert not judge(live(61, busy_for=61), LIVENESS, now=NOW, max_age=60).ok

    def test_a_busy_record_still_fresh_is_just_fresh(self):
        assert judge(live(1, busy_for=5000), LIVENESS, now=NOW, max_age=60).ok

    def test_a_clock_ahead_counts_as_fresh(self):
        assert judge(live(-30), LIVENESS, now=NOW, max_age=60).ok


class TestReadiness:
    """Readiness holds while fresh and ready; the reason and how long it has been false are said."""

    def test_ready_names_the_queues(self):
        result = judge(ready(), READINESS, now=NOW, max_age=60)
        assert result.ok and "consuming 'celery', 'emails'" in result.line

    def test_not_ready_says_why_and_for_how_long(self):
        result = judge(ready(problem="consumer for queue 'emails' cancelled"), READINESS, now=NOW, max_age=60)
        assert result.code == EXIT_FAILED
        assert result.line == ("readiness: not ready for 42s: consumer for queue 'emails' cancelled "
                               "(celery@web-1 pid 7)")

    def test_stale_ready_fails(self):
        result = judge(ready(61), READINESS, now=NOW, max_age=60)
        assert result.code == EXIT_FAILED and result.line.startswith("readiness: stale for 61s")

    def test_busy_solo_keeps_its_last_readiness(self):
        assert judge(ready(300, busy_for=300), READINESS, now=NOW, max_age=60, max_busy=600).ok
        assert not judge(ready(300, problem="x", busy_for=300), READINESS, now=NOW, max_age=60,
                         max_busy=600).ok


class TestUnusableEvidence:
    @pytest.mark.parametrize("record, why", [
        ([], "not a JSON object"),
        ({"kind": "readiness"}, "not a liveness record"),
        ({**live(), "version": 99}, "record version 99"),
        ({**live(), "updated": "soon"}, "'updated' is not a number"),
        ({**live(), "updated": float("nan")}, "'updated' is not a number"),
        ({**live(), "pid": True}, "'pid'"),
        ({**live(), "interval": 0}, "'interval' is not positive"),
        ({**live(), "busy": {"since": None}}, "'busy.since'"),
    ])
    def test_a_bad_record_is_no_evidence(self, record, why):
        result = judge(record, LIVENESS, now=NOW, max_age=60)
        assert result.code == EXIT_NO_EVIDENCE and why in result.line and result.line.startswith("liveness:")

    def test_ready_must_be_a_boolean(self):
        result = judge({**ready(), "ready": "yes"}, READINESS, now=NOW)
        assert result.code == EXIT_NO_EVIDENCE and "'ready'" in result.line


class TestReadinessProblem:
    """What the worker writes as the reason, from its connection, queues and broker round trip."""

    def args(self, **changes: Any) -> dict[str, Any]:
        base: dict[str, Any] = {"connected": True, "lost_reason": None, "expected": ["celery", "emails"],
                                "consumed": ["celery", "emails"], "cancelled": [], "broker_ok_at": NOW - 1,
                                "broker_error": None, "broker_grace": 3.0, "now": NOW}
        return {**base, **changes}

    def test_all_well_is_none(self):
        assert readiness_problem(**self.args()) is None

    def test_a_lost_connection_says_so(self):
        assert readiness_problem(**self.args(connected=False, lost_reason="lost")) == "lost"

    def test_a_cancelled_queue_is_named(self):
        problem = readiness_problem(**self.args(consumed=["celery"], cancelled=["emails"]))
        assert problem == "consumer for queue 'emails' cancelled"

    def test_a_queue_never_consumed_is_named(self):
        assert readiness_problem(**self.args(consumed=["celery"])) == "not consuming queue 'emails'"

    def test_extra_queues_do_not_matter(self):
        assert readiness_problem(**self.args(consumed=["celery", "emails", "more"])) is None

    def test_a_silent_broker(self):
        problem = readiness_problem(**self.args(broker_ok_at=NOW - 9, broker_error="TimeoutError: read"))
        assert problem == "the broker has not answered a round trip for 9s (TimeoutError: read)"
        assert "yet" in readiness_problem(**self.args(broker_ok_at=None))

    def test_a_transport_without_a_round_trip_is_not_judged_on_one(self):
        assert readiness_problem(**self.args(broker_ok_at=None, broker_grace=None)) is None


class TestParseArgs:
    def test_minimal(self):
        assert parse_args(["/probe", "--liveness"]) == CheckArgs("/probe", "liveness")

    def test_durations_either_spelling(self):
        args = parse_args(["--readiness", "--max-age=90s", "/probe", "--max-busy", "1h"])
        assert args == CheckArgs("/probe", "readiness", 90.0, 3600.0)

    def test_a_folder_after_double_dash(self):
        assert parse_args(["--liveness", "--", "-odd"]).folder == "-odd"

    @pytest.mark.parametrize("argv, message", [
        (["--liveness"], "missing argument DIR"),
        (["/p"], "exactly one of --liveness or --readiness"),
        (["/p", "--liveness", "--readiness"], "exactly one of"),
        (["/p", "--liveness", "--max-age"], "--max-age needs a value"),
        (["/p", "--liveness", "--max-age", "soon"], "--max-age 'soon'"),
        (["/p", "--liveness", "--max-age", "0"], "above 0"),
        (["/p", "--liveness", "--max-age", "inf"], "finite"),
        (["/p", "--liveness", "--verbose"], "no such option: --verbose"),
        (["/p", "/q", "--liveness"], "extra argument '/q'"),
    ])
    def test_bad_command_lines(self, argv, message):
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("'", "'")):
            parse_args(argv)


class TestWhichProcessWroteIt:
    """A fresh file names its process by pid and start time: a reused pid does not inherit it."""

    def test_the_same_process_passes(self):
        record = {**live(1), "pid_start": 4242}
        assert judge(record, LIVENESS, now=NOW, max_age=60, started=lambda pid: 4242).ok

    def test_another_process_with_that_pid_fails_however_fresh(self):
        for kind, record in ((LIVENESS, live(1)), (READINESS, ready(1))):
            result = judge({**record, "pid_start": 4242}, kind, now=NOW, max_age=60, started=lambda pid: 9999)
            assert result.code == EXIT_FAILED
            assert result.line == (f"{kind}: written 1.0s ago by celery@web-1 pid 7, which is gone "
                                   "(another process has that pid now; a restarted worker has not written yet)")

    def test_no_process_with_that_pid_fails(self):
        result = judge({**live(1), "pid_start": 4242}, LIVENESS, now=NOW, max_age=60, started=lambda pid: None)
        assert result.code == EXIT_FAILED and "no process has that pid now" in result.line

    def test_a_record_without_a_start_time_is_judged_as_before(self):
        assert judge(live(1), LIVENESS, now=NOW, max_age=60, started=lambda pid: None).ok
