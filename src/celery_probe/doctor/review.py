"""One ``celery-probe doctor`` review: gather the facts within the deadline, judge them, and say
when the review could not look at most of what it checks."""

from __future__ import annotations

from celery_probe.config.settings import Settings
from celery_probe.doctor.catalogue import RULES
from celery_probe.doctor.facts import Facts, Unchecked
from celery_probe.doctor.gather import AppConfigFailed, gather
from celery_probe.doctor.render import Review
from celery_probe.doctor.rules import NOT_CHECKED, Check, evaluate
from celery_probe.errors import AppLoadError
from celery_probe.probing.deadline import Deadline


def run_review(settings: Settings, deadline: Deadline) -> Review:
    target = settings.describe_target()
    try:
        facts = gather(settings, deadline)
    except (AppConfigFailed, AppLoadError) as exc:  # the app's own code or settings failed
        checks = [Check(rule.code, NOT_CHECKED, reason=str(exc)) for rule in RULES]
        return Review(checks, target, "unknown", [], deadline.elapsed(), deadline.total, incomplete=str(exc))
    return Review(evaluate(facts), target, facts.broker.url, _names(facts), deadline.elapsed(), deadline.total,
                  incomplete=_incomplete(facts))


def _names(facts: Facts) -> list[str]:
    return [w.name for w in facts.workers] if isinstance(facts.workers, list) else []


def _incomplete(facts: Facts) -> str | None:
    """Why the review lacks the evidence an exit 0 or 1 would claim, or None.

    A review with no answering worker has checked the app and the broker, not the workers:
    exit 0 there would tell a pipeline that gates on doctor "fine" for lack of evidence.
    """
    if not facts.broker.reachable:
        return f"the broker did not answer ({facts.broker.error}): its checks and the workers' were not made"
    if isinstance(facts.workers, Unchecked):
        return f"no worker could be asked ({facts.workers.reason}): the workers' checks were not made"
    if not facts.workers:
        return "no worker answered ping: the workers' checks were not made"
    return None
