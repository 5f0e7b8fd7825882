"""The last run and the last success a history records: what a restarted ``serve`` starts from."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from celery_probe.storage.history import LastTimes, last_times, read_last_times

T0 = 1_800_000_000


def line(offset: int, status: str, **extra: object) -> str:
    at = datetime.fromtimestamp(T0 + offset, tz=timezone.utc).isoformat(timespec="seconds")
    return json.dumps({"checked_at": at, "status": status, **extra})


class TestLastTimes:
    """Newest first in, the newest run's and the newest healthy run's times out."""

    def test_a_down_run_after_healthy_ones(self):
        lines = [line(n, "healthy") for n in range(64)] + [line(64, "down")]
        assert last_times(reversed(lines)) == LastTimes(run=T0 + 64, success=T0 + 63)

    def test_never_healthy_has_a_last_run_only(self):
        assert last_times([line(5, "unknown"), line(1, "degraded")]) == LastTimes(run=T0 + 5, success=None)

    def test_torn_foreign_and_timeless_lines_are_passed_over(self):
        lines = ['{"checked_at": "2027', json.dumps({"event": "remediation", "action": "restart"}),
                 json.dumps({"checked_at": "yesterday", "status": "healthy"}),
                 json.dumps({"checked_at": "2027-01-15T08:00:00", "status": "healthy"}),  # no zone: not ours
                 line(2, "down"), line(1, "healthy")]
        assert last_times(lines) == LastTimes(run=T0 + 2, success=T0 + 1)

    def test_empty(self):
        assert last_times([]) == LastTimes()


class TestReadLastTimes:
    def test_the_newest_healthy_run_may_lie_in_a_rotated_file(self, tmp_path):
        (tmp_path / "history.jsonl.1").write_text(line(0, "healthy") + "\n" + line(1, "healthy") + "\n")
        (tmp_path / "history.jsonl").write_text(line(2, "down") + "\n" + line(3, "down") + "\n")
        assert read_last_times(tmp_path) == LastTimes(run=T0 + 3, success=T0 + 1)

    def test_no_history(self, tmp_path):
        assert read_last_times(tmp_path) == LastTimes()
