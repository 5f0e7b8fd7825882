"""Answer questions about installed packages once per process, not once per broker connection.

A probe run asks :mod:`importlib.metadata` the same things again and again, and each answer
re-reads files of every installed distribution:

* redis-py reads its own version (``metadata.version("redis")``, parsing its ``METADATA``
  with the :mod:`email` parser) for every connection it opens, to send ``CLIENT SETINFO``;
  kombu opens several per run (8 in a healthy run of the built-in probes);
* Celery scans the entry points of every installed distribution for the result backends
  (``load_extension_class_names``) whenever it resolves the backend, and kombu does the
  same for its transports.

Together that was about a tenth of a forked probe run's CPU. Both answers are functions of
the installed packages, which a process cannot change under itself: the code it runs is the
code it imported, so the version it read first is the true one for the rest of its life, and
a plugin installed after it started is not one it could load anyway. ``serve`` is restarted
after an upgrade (docs/production.md), as any Python service is.

:func:`install` wraps :func:`importlib.metadata.version` and
:func:`importlib.metadata.entry_points` with a memo, and rebinds the modules already imported
that took the functions by name (``from importlib.metadata import entry_points``). It is
called in processes celery-probe owns: the resident runner before its first fork (so no
run pays for it) and a ``celery-probe run`` process. Never in an operator's process (the
pytest plugin, ``ProbeMiddleware``).
"""

from __future__ import annotations

import functools
import importlib.metadata
import sys
from collections.abc import Callable
from typing import Any

MEMO_SIZE = 512


def _any_call(*_args: Any, **_kwargs: Any) -> bool:
    return True


def _selection_only(*args: Any, **kwargs: Any) -> bool:
    """``entry_points(group=...)`` answers an immutable ``EntryPoints``; with no selection,
    Python 3.11 answers a mutable dict of groups, which must not be shared between callers."""
    return bool(kwargs) and not args


# What a probe run asks, asked once by the resident runner before it forks, so that no
# forked run asks it again (a memo filled after the fork would die with the run).
WARM_QUESTIONS: tuple[tuple[str, tuple[str, ...], dict[str, str]], ...] = (
    ("version", ("redis",), {}),
    ("entry_points", (), {"group": "celery.result_backends"}),
)

# Which functions, and which of their calls have an answer that can be shared.
MEMOIZED: dict[str, Callable[..., bool]] = {"version": _any_call, "entry_points": _selection_only}


def install() -> None:
    """Memoize :data:`MEMOIZED` of :mod:`importlib.metadata` in this process (idempotent)."""
    for name, shareable in MEMOIZED.items():
        original = getattr(importlib.metadata, name)
        if getattr(original, "celery_probe_memo", False):
            continue
        memo = _memoized(original, shareable)
        setattr(importlib.metadata, name, memo)
        _rebind(original, memo, name)


def warm() -> None:
    """Ask :data:`WARM_QUESTIONS` through the memo (after :func:`install`)."""
    for name, args, kwargs in WARM_QUESTIONS:
        try:
            getattr(importlib.metadata, name)(*args, **kwargs)
        except importlib.metadata.PackageNotFoundError:
            continue  # that package is absent: a run would not ask


def _memoized(function: Callable[..., Any], shareable: Callable[..., bool]) -> Callable[..., Any]:
    """``function`` with its ``shareable`` answers kept by arguments; an error is not kept."""
    cached = functools.lru_cache(maxsize=MEMO_SIZE)(function)

    @functools.wraps(function)
    def memo(*args: Any, **kwargs: Any) -> Any:
        if not shareable(*args, **kwargs):
            return function(*args, **kwargs)
        try:
            return cached(*args, **kwargs)
        except TypeError:  # an unhashable argument: ask afresh
            return function(*args, **kwargs)

    memo.celery_probe_memo = True  # type: ignore[attr-defined]
    return memo


def _rebind(original: Callable[..., Any], memo: Callable[..., Any], name: str) -> None:
    """Point the imported modules that hold ``original`` under ``name`` at ``memo``."""
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if namespace is not None and namespace.get(name) is original:
            namespace[name] = memo
