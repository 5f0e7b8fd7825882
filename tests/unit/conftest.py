"""Unit tests: pure logic, checked without a broker, a network or a process of their own.

The guard below makes that a rule rather than a hope: while a test of this folder runs, opening
a network socket or starting a process fails it, with a message that says where it belongs.
(It is an audit hook, so it sees what libraries do too; it is idle outside this folder's tests.)
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest

_guarding = False
_PROCESS_EVENTS = {"subprocess.Popen", "os.posix_spawn", "os.fork", "os.exec", "os.system"}


def _refuse_io(event: str, args: tuple[Any, ...]) -> None:
    if not _guarding:
        return
    if event in ("socket.connect", "socket.bind"):
        if getattr(args[0], "family", None) == socket.AF_UNIX:
            return
        raise RuntimeError(f"a unit test opened a network socket ({event} {args[1]!r}): it belongs in tests/integration/")
    if event in _PROCESS_EVENTS:
        raise RuntimeError(f"a unit test started a process ({event}): it belongs in tests/integration/")


sys.addaudithook(_refuse_io)


@pytest.fixture(autouse=True)
def _no_network_no_process() -> Iterator[None]:
    global _guarding
    _guarding = True
    try:
        yield
    finally:
        _guarding = False
