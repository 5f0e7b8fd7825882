"""The ``probe`` marker: what a probe's failure means for the verdict.

``@pytest.mark.probe(severity="critical", code="celery_worker_down")``. A failed, errored
or timed-out ``critical`` probe makes the verdict ``down``; a failed ``degraded`` probe
makes it ``degraded``; a failed ``error`` probe says that its evidence could not be had
(the prober is pointed elsewhere, say) and makes it ``unknown``, never ``down``. A test
without the marker counts as critical with the code ``celery_probe_failed``: a health
check that fails should never pass unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery_probe.verdict.model import Severity

SEVERITIES = ("critical", "degraded", "error")
DEFAULT_SEVERITY: Severity = "critical"
DEFAULT_CODE = "celery_probe_failed"

MARKER_HELP = (
    "probe(severity='critical'|'degraded'|'error', code='celery_...'): how a failure of this probe "
    "affects the celery-probe verdict"
)


@dataclass(frozen=True)
class ProbeMark:
    severity: str
    code: str

    def as_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "code": self.code}


def probe_mark(args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> ProbeMark:
    """Read and validate a ``probe`` marker's arguments; raise ValueError naming ``where``."""
    severity = kwargs.get("severity", args[0] if args else DEFAULT_SEVERITY)
    code = kwargs.get("code", args[1] if len(args) > 1 else DEFAULT_CODE)
    if severity not in SEVERITIES:
        raise ValueError(f"{where}: probe severity must be one of {SEVERITIES}, not {severity!r}")
    if not isinstance(code, str) or not code.replace("_", "").isalnum():
        raise ValueError(f"{where}: probe code must be a word like 'celery_queue_high', not {code!r}")
    return ProbeMark(severity, code)
