"""A deadline on receiving a request's headers, which uvicorn does not have.

uvicorn bounds a keep-alive connection's idle time between two requests
(``timeout_keep_alive``) and nothing else: a connection that sends no byte after the TCP
handshake, or drips its request line and headers a byte at a time, holds a socket and a
file descriptor for as long as the client likes (uvicorn's own issue #157 lists the
missing ``--timeout-request-start``). A few hundred such clients exhaust the descriptors
of a public ``serve``.

:func:`protocol_with_header_deadline` returns uvicorn's h11 protocol with a timer: armed when
the connection is made and again when the first bytes of a later keep-alive request arrive,
cancelled as soon as h11 has parsed the whole request head; when it fires, the connection
is closed. The request head is known to be complete from h11's own state machine
(:attr:`h11.Connection.their_state` leaves ``IDLE``), not from a parser of our own. Bodies
and responses are not bounded here: every ``serve`` route is a GET answered from memory.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_HEADER_TIMEOUT = 10.0


class _HeaderDeadlineH11(H11Protocol):
    header_timeout: float = DEFAULT_HEADER_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            if data and self._header_timer is None and not self.transport.is_closing():
                self._arm()  # the first bytes of the next request: its head is now on the clock
        else:
            self._disarm()  # the whole head is in (or the connection is done with)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def protocol_with_header_deadline(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol closing a connection whose request head takes over ``seconds``.

    Pass it as ``uvicorn.Config(http=...)``; the class is uvicorn's own with the timer added,
    so everything else (keep-alive, limits, errors) is uvicorn's behaviour.
    """
    return type("HeaderDeadlineH11Protocol", (_HeaderDeadlineH11,), {"header_timeout": float(seconds)})
