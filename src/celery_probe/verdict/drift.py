"""Worker drift: the workers that answer, and the queues they consume, against expectations.

Pure functions, no broker. Two expectations, both with fnmatch-style patterns matched
case-sensitively against worker node names (``sync@host-1``); a pattern without ``@`` is
matched against the part before the ``@`` (``sync*`` is ``sync*@*``):

* expected worker names (``--expect-worker-name sync@*``): each pattern must match at
  least one worker that answered;
* expected consumers (``--expect-consumer sync=sync@*``): for a queue named in any rule,
  every worker matching one of its patterns must consume it, no other worker may, and each
  pattern must match some worker. Queues without a rule are not judged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase


def name_matches(name: str, pattern: str) -> bool:
    """Whether worker ``name`` matches ``pattern`` (a pattern without ``@`` ignores the host)."""
    if "@" not in pattern:
        return fnmatchcase(name.split("@", 1)[0], pattern)
    return fnmatchcase(name, pattern)


def missing_names(patterns: Iterable[str], names: Iterable[str]) -> list[str]:
    """The patterns that no worker name matches, in the order given."""
    present = list(names)
    return [p for p in dict.fromkeys(patterns) if not any(name_matches(n, p) for n in present)]


@dataclass(frozen=True)
class Finding:
    """One difference between the expected and the actual queue membership."""

    kind: str  # "missing" | "unexpected" | "no_worker"
    queue: str
    worker: str | None = None
    pattern: str | None = None

    def describe(self) -> str:
        if self.kind == "missing":
            return f"{self.worker} does not consume {self.queue} (expected for {self.pattern})"
        if self.kind == "unexpected":
            return f"{self.worker} consumes {self.queue} but matches none of its patterns"
        return f"no worker matching {self.pattern} is up to consume {self.queue}"

    def as_dict(self) -> dict[str, str | None]:
        return {"kind": self.kind, "queue": self.queue, "worker": self.worker, "pattern": self.pattern}


def rules_by_queue(rules: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """``[(queue, pattern), …]`` grouped as ``{queue: [patterns]}`` (order kept, no repeats)."""
    grouped: dict[str, list[str]] = {}
    for queue, pattern in rules:
        patterns = grouped.setdefault(queue, [])
        if pattern not in patterns:
            patterns.append(pattern)
    return grouped


def consumer_drift(
    rules: Iterable[tuple[str, str]], consumed: Mapping[str, Sequence[str]]
) -> list[Finding]:
    """Differences between ``rules`` and ``consumed`` (``{worker: [queues it consumes]}``)."""
    findings: list[Finding] = []
    workers = sorted(consumed)
    for queue, patterns in rules_by_queue(rules).items():
        reported: set[str] = set()
        for pattern in patterns:
            matching = [w for w in workers if name_matches(w, pattern)]
            if not matching:
                findings.append(Finding("no_worker", queue, pattern=pattern))
            for worker in matching:
                if queue not in consumed[worker] and worker not in reported:
                    reported.add(worker)
                    findings.append(Finding("missing", queue, worker, pattern))
        for worker in workers:
            if queue in consumed[worker] and not any(name_matches(worker, p) for p in patterns):
                findings.append(Finding("unexpected", queue, worker))
    return findings


def summary(findings: Sequence[Finding], limit: int = 8) -> str:
    """One line for a failure message: the first ``limit`` findings, then a count."""
    text = "; ".join(f.describe() for f in findings[:limit])
    more = len(findings) - limit
    return text + (f"; and {more} more" if more > 0 else "")
