"""Cleaning up after tests on the shared RabbitMQ: their queues, exchanges and vhosts."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence


def delete_rabbitmq_names(url: str, queues: Sequence[str], control_exchange: str) -> None:
    """Delete a test's RabbitMQ queues, its pidbox exchanges and the queues' exchanges.

    Names already gone are skipped (RabbitMQ closes the channel on such an error, so a fresh
    one is opened). The connection is bounded by a 5 s connect timeout.
    """
    from kombu import Connection

    with Connection(url, connect_timeout=5) as conn:
        channel = conn.channel()
        for queue in dict.fromkeys(queues):
            try:
                channel.queue_delete(queue)
            except Exception:  # noqa: BLE001 - already gone: go on with a fresh channel
                channel = conn.channel()
        for exchange in (f"{control_exchange}.pidbox", f"reply.{control_exchange}.pidbox", *dict.fromkeys(queues)):
            try:
                channel.exchange_delete(exchange)
            except Exception:  # noqa: BLE001 - already gone: go on with a fresh channel
                channel = conn.channel()


# --------------------------------------------------------------------------- RabbitMQ vhosts


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl`` against the local RabbitMQ; its stdout (bounded, raises on failure)."""
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60,
                          check=True).stdout
