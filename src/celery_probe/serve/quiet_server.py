"""uvicorn's server without its 10 Hz tick: serve sleeps between probe runs.

``uvicorn.Server.main_loop`` wakes every 0.1 s to look at ``should_exit`` and to refresh the
``Date`` header once a second. On an idle ``serve`` that tick is most of its CPU: measured
at 3.3 ms of CPU per second, which is 50 ms per probe run at a 15 s interval, as much again
as a warm probe run costs. :class:`QuietServer` ticks once a second (the ``Date`` header is
still refreshed each second, by the same ``on_tick``) and is woken at once by a stop signal,
so shutdown is as prompt as before: uvicorn's ``handle_exit`` runs in the loop's thread
between bytecodes, and waking the loop from there goes through ``call_soon_threadsafe``, the
loop's self-pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType

import uvicorn

TICK = 1.0  # seconds between uvicorn's housekeeping ticks (uvicorn: 0.1)
UVICORN_TICKS_PER_TICK = 10  # on_tick(counter) refreshes the Date header when counter % 10 == 0


class QuietServer(uvicorn.Server):
    """A ``uvicorn.Server`` whose main loop ticks every :data:`TICK` seconds, woken by a stop."""

    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + UVICORN_TICKS_PER_TICK) % 864000
            # A timer that sets the event, not asyncio.wait_for: no task and no timeout
            # context to build and tear down once a second.
            timer = self._loop.call_later(TICK, self._wake.set)
            await self._wake.wait()
            timer.cancel()
            self._wake.clear()
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)
