"""Several remote-control questions asked at once, on one connection, in one round.

``app.control.inspect().active()`` and its siblings each make a round of their own: declare
and bind a reply queue, publish, start a consumer, wait, cancel it and delete the queue. A
probe run asks six such questions (ping, then active, reserved, scheduled, active_queues and
stats), so six rounds, each paying the broker operations and the client-side work again.
Here all of them are published together, each with its own reply ticket as Celery's own
broadcast does, and every answer comes back to the one reply queue of the mailbox, where
one consumer sorts them by ticket. A worker handles its control messages in the order they
came, so its answers arrive one after another, just as they would for separate calls.

When the round ends:

* as soon as every worker heard from answered every question, and as many workers as
  expected (``expect``) or every addressed worker (``destination``) was heard from;
* otherwise after a gap with no answer: ``patience`` while a worker that was heard from
  still owes an answer, ``idle`` when nobody does (kombu's own collector also treats its
  timeout as the longest gap between two replies, not as a total);
* at the latest after ``budget`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from kombu import Consumer, Producer
from kombu.common import maybe_declare
from kombu.utils.uuid import uuid

if TYPE_CHECKING:
    from celery import Celery
    from kombu import Connection

MAX_MESSAGES = 100_000  # a bound on the loop only: the budget ends a round long before


@dataclass
class WorkerReply:
    """When a worker's answer to the round's first question (the ping) came."""

    name: str
    latency_ms: float  # since the round's questions were published
    answered_at: str  # wall clock, ISO 8601 with milliseconds


@dataclass
class RoundAnswers:
    """What one round heard: question -> worker -> answer."""

    answers: dict[str, dict[str, Any]]
    first_answers: dict[str, WorkerReply] = field(default_factory=dict)  # to the first question, by worker
    waited_ms: float = 0.0

    @property
    def heard(self) -> set[str]:
        return {worker for replies in self.answers.values() for worker in replies}

    def owing(self) -> set[str]:
        """Workers heard from that have not answered every question yet."""
        heard = self.heard
        return {worker for replies in self.answers.values() for worker in heard - set(replies)}


def ask_round(
    app: Celery,
    conn: Connection,
    questions: Sequence[str],
    *,
    idle: float,
    patience: float,
    budget: float,
    expect: int | None = None,
    destination: Sequence[str] | None = None,
) -> RoundAnswers:
    """Publish every question in ``questions`` at once on ``conn`` and collect the answers.

    ``conn`` should be a connection of its own: a round that ends by a gap leaves a blocking
    read in flight on Redis (see :func:`celery_probe.probing.workers.fresh_connection`).
    """
    started = time.perf_counter()
    found = RoundAnswers({question: {} for question in questions})
    mailbox = app.control.mailbox(conn)
    channel = conn.default_channel
    tickets = {uuid(): question for question in questions}
    targets = list(destination) if destination is not None else None
    reply_queue = mailbox.reply_queue  # a new Queue at each access: the round takes it once
    # kombu declares an auto-delete queue again at every publish and every consumer; the
    # round declares its reply queue once, then publishes the questions as kombu's
    # ``Mailbox._publish`` would (the remote-control wire format every worker reads).
    maybe_declare(reply_queue(channel))
    producer = Producer(channel, auto_declare=False)  # this connection, not one more from the app's pool
    reply_to = {"exchange": mailbox.reply_exchange.name, "routing_key": mailbox.oid}
    expires = time.time() + budget  # a worker that reads a question later than that ignores it
    for index, (ticket, question) in enumerate(tickets.items()):
        producer.publish(
            {"method": question, "arguments": {}, "destination": targets, "pattern": None, "matcher": None,
             "ticket": ticket, "reply_to": reply_to},
            exchange=mailbox.exchange.name, declare=[mailbox.exchange] if index == 0 else [],
            headers={"clock": mailbox.clock.forward(), "expires": expires}, serializer=mailbox.serializer,
        )
    first = questions[0]

    def on_message(body: Any, message: Any) -> None:
        mailbox.clock.adjust(message.headers.get("clock") or 0)
        question = tickets.get(message.headers.get("ticket"))
        if question is None or not isinstance(body, dict):
            return  # an answer to another round (an older, abandoned one), or nonsense
        for worker, answer in body.items():
            name = str(worker)
            found.answers[question].setdefault(name, answer)
            if question == first and name not in found.first_answers:
                found.first_answers[name] = WorkerReply(
                    name, round((time.perf_counter() - started) * 1000, 3),
                    datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                )

    def complete() -> bool:
        heard = found.heard
        if found.owing():
            return False
        if targets is not None:
            return set(targets) <= heard
        return expect is not None and len(heard) >= expect

    consumer = Consumer(channel, [reply_queue], accept=mailbox.accept, no_ack=True, auto_declare=False)
    consumer.register_callback(on_message)
    try:
        with consumer:
            for _ in range(MAX_MESSAGES):
                left = started + budget - time.perf_counter()
                if complete() or left <= 0:
                    break
                gap = patience if found.owing() else idle
                try:
                    conn.drain_events(timeout=max(0.001, min(gap, left)))
                except TimeoutError:  # socket.timeout, as kombu raises it
                    break
    finally:
        channel.after_reply_message_received(reply_queue.name)
    found.waited_ms = round((time.perf_counter() - started) * 1000, 3)
    return found
