"""Which tasks make up a queue's backlog: a bounded sample of the queue head, by task name.

kombu's Redis transport pushes with ``LPUSH`` and pops with ``BRPOP``/``RPOP``, so the
next message a worker takes is at the right end of a list, and it empties the priority
lists in the order of ``priority_steps`` (``queue`` first, then ``queue\\x06\\x163``…).
The head of a queue is therefore the right end of its first non-empty lists. Knowing each
list's length (measured just before, in the same run), the sample is spread over the
lists in that order and read with ``LRANGE -n -1`` in one pipelined round trip for all
watched queues: never more than ``sample`` messages per queue in total.

Each message is kombu's JSON envelope; the task name is ``headers.task`` (task protocol
2), or the ``task`` field of a JSON body (protocol 1). Anything else counts as
:data:`UNKNOWN_TASK`. Other transports have no cheap way to look at waiting messages
without taking them, so there the sample is not available.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celery_probe.probing.broker import QueueDepth, redis_queue_keys
from celery_probe.probing.redis_access import key_prefix, plain_client, transport_name

if TYPE_CHECKING:
    from kombu import Connection

UNKNOWN_TASK = "(unknown)"
TOP_TASKS = 3  # named in a celery_queue_high message


@dataclass
class QueueBacklog:
    """Task names counted in the head of one queue."""

    name: str
    sampled: int = 0
    by_task: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"sampled": self.sampled, "by_task": dict(self.by_task)}


@dataclass
class Backlog:
    """The sample of every watched queue, or why there is none."""

    available: bool
    sample: int
    queues: dict[str, QueueBacklog] = field(default_factory=dict)
    reason: str | None = None


# ------------------------------------------------------------------------ pure logic


def task_name(raw: Any) -> str:
    """The task name in one kombu message envelope (as stored in a Redis list)."""
    try:
        message = json.loads(raw)
    except (TypeError, ValueError, UnicodeDecodeError):
        return UNKNOWN_TASK
    if not isinstance(message, Mapping):
        return UNKNOWN_TASK
    headers = message.get("headers")
    if isinstance(headers, Mapping):
        name = headers.get("task")
        if isinstance(name, str) and name:
            return name
    return _protocol1_task(message) or UNKNOWN_TASK


def _protocol1_task(message: Mapping[str, Any]) -> str | None:
    """Task protocol 1 keeps the name in the (JSON) body."""
    if "json" not in str(message.get("content-type") or ""):
        return None
    body = message.get("body")
    properties = message.get("properties")
    encoding = properties.get("body_encoding") if isinstance(properties, Mapping) else None
    try:
        if encoding == "base64" and isinstance(body, str):
            body = base64.b64decode(body)
        decoded = json.loads(body) if isinstance(body, (str, bytes)) else body
    except (TypeError, ValueError, UnicodeDecodeError):
        return None
    name = decoded.get("task") if isinstance(decoded, Mapping) else None
    return name if isinstance(name, str) and name else None


def count_tasks(messages: Iterable[Any]) -> dict[str, int]:
    """``{task name: count}``, most frequent first (ties by name)."""
    counts = Counter(task_name(raw) for raw in messages)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def head_plan(lengths: Sequence[tuple[str, int]], sample: int) -> list[tuple[str, int]]:
    """How many messages to read from each list, in consumption order, ``sample`` in all."""
    plan: list[tuple[str, int]] = []
    left = max(0, sample)
    for key, length in lengths:
        if left <= 0:
            break
        take = min(max(0, int(length)), left)
        if take:
            plan.append((key, take))
            left -= take
    return plan


def top_tasks(by_task: Mapping[str, int], limit: int = TOP_TASKS) -> list[tuple[str, int]]:
    """The ``limit`` most frequent tasks, most frequent first."""
    ranked = sorted(by_task.items(), key=lambda item: (-item[1], item[0]))
    return ranked[:limit]


def describe_top(backlog: QueueBacklog | None, limit: int = TOP_TASKS) -> str:
    """``top tasks in 100 sampled: a.b 80, c.d 20`` (empty when nothing was sampled)."""
    if backlog is None or not backlog.sampled:
        return ""
    shown = ", ".join(f"{name} {count}" for name, count in top_tasks(backlog.by_task, limit))
    more = len(backlog.by_task) - limit
    tail = f" and {more} more" if more > 0 else ""
    return f"top tasks in {backlog.sampled} sampled: {shown}{tail}"


# ------------------------------------------------------------------------ reading


def sample_backlog(conn: Connection, depths: Mapping[str, QueueDepth], sample: int) -> Backlog:
    """Count task names in the head of each queue of ``depths`` (their measured lengths)."""
    if sample <= 0:
        return Backlog(False, sample, reason="backlog sampling is off (backlog sample 0)")
    transport = transport_name(conn)
    if transport != "redis":
        return Backlog(
            False, sample,
            reason=f"per-task backlog needs the Redis transport; the broker is {transport}",
        )
    channel: Any = conn.default_channel
    prefix = key_prefix(channel)
    steps = list(channel.priority_steps)
    plans: dict[str, list[tuple[str, int]]] = {}
    for queue, depth in depths.items():
        if not depth.exists:
            continue
        lengths = [
            (key, int(depth.by_priority.get(label, 0) or 0))
            for label, key in redis_queue_keys(queue, channel.sep, steps)
        ]
        plans[queue] = head_plan(lengths, sample)
    result = Backlog(True, sample)
    reads = [(queue, key, take) for queue, plan in plans.items() for key, take in plan]
    answers: list[Any] = []
    if reads:
        with plain_client(channel).pipeline(transaction=False) as pipe:
            for _queue, key, take in reads:
                pipe.lrange(f"{prefix}{key}", -take, -1)
            answers = pipe.execute()
    messages: dict[str, list[Any]] = {queue: [] for queue in plans}
    for (queue, _key, take), items in zip(reads, answers):
        # A list may have shrunk between the length and the read, never grown past take.
        messages[queue].extend(list(items or [])[-take:])
    for queue, items in messages.items():
        items = items[:sample]
        result.queues[queue] = QueueBacklog(queue, len(items), count_tasks(items))
    return result
