"""A round trip to the broker from inside the worker, every interval, on a thread of its own.

Celery notices a broker that went away only when a socket says so: a frozen broker (SIGSTOP,
a dead load balancer, a half-open connection) leaves the consumer waiting with its
connection "up" for tens of seconds (kombu drops a silent Redis BRPOP connection after
``brpop_timeout + health_check_interval``; py-amqp waits two missed heartbeats). So
readiness also asks the broker itself: a Redis ``PING`` or an AMQP ``basic.qos`` (both a
request and its reply) on a connection of this thread's own, each bounded by socket
timeouts. The thread only records when the broker last answered; the event loop reads that
figure and decides. A round trip that hangs despite the timeouts simply stops the figure
from advancing, so readiness still fails; nothing here ever blocks the worker's loop.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)


class BrokerCheck:
    """Every ``interval`` s, one bounded round trip; ``ok_at`` and ``error`` say how it went.

    Only Redis and AMQP brokers have one here; for other transports ``method`` is None, no
    thread starts, and readiness rests on the consumer's own state alone (and says so).
    """

    def __init__(self, app: Any, interval: float, timeout: float) -> None:
        self.app = app
        self.interval = interval
        self.timeout = timeout
        self.ok_at: float | None = None  # unix time of the last answer
        self.error: str | None = None  # why the last round trip failed
        self.method = self._method()  # what the round trip is, or None: this transport has none
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: Any = None

    def _method(self) -> str | None:
        try:
            driver = self.app.connection_for_read().transport.driver_type  # no I/O: names the transport
        except Exception:  # noqa: BLE001 - an unknown transport has no round trip we know
            return None
        return {"redis": "redis PING", "amqp": "amqp basic.qos"}.get(driver)

    def start(self) -> None:
        if self.method is None:
            return  # SQS, memory, filesystem...: no request-and-reply of ours to time; not faked
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="celery-probe-broker-check", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._round_trip()
            except Exception as exc:  # noqa: BLE001 - any failure is "the broker did not answer"
                self.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
                self._close()
            else:
                self.ok_at = time.time()
                self.error = None
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        self._close()

    def _open(self) -> Any:
        if self._connection is None:
            if self.method == "redis PING":
                bounds = {"socket_timeout": self.timeout, "socket_connect_timeout": self.timeout}
            else:
                bounds = {"read_timeout": self.timeout, "write_timeout": self.timeout}
            connection = self.app.connection_for_read(connect_timeout=self.timeout, transport_options=bounds)
            self._connection = connection
            connection.connect()  # one attempt: an outage is recorded now, not retried here
        return self._connection

    def _round_trip(self) -> None:
        connection = self._open()
        channel = connection.default_channel
        if self.method == "redis PING":
            channel.client.ping()
        else:  # AMQP: a synchronous method and its -ok reply
            channel.basic_qos(0, 0, False)

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.release()
            except Exception:
                logger.debug("closing the broker check connection failed", exc_info=True)
