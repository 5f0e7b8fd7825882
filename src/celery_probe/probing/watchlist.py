"""Which queues a probe run watches when ``-Q`` does not say.

Tasks do not only go where ``task_queues`` says: ``task_routes`` can send them to queues
that appear in no ``task_queues`` and in no worker's ``-Q``, and a worker can consume
queues the app never names. A queue left off the watch list is the worst case there is:
messages pile up in it while the verdict says healthy. So by default the list is the
default queue, ``task_queues``, every queue ``task_routes`` names, and (once the workers
answered) every queue a worker consumes.

Pure: reads configuration values, never the broker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class WatchList:
    """The queues to watch, which of them must have a consumer, and what could not be listed.

    ``required`` are the queues the operator (``-Q``) or the app's own queue list names:
    one of them without a consumer fails the round trip, as before. The others (the
    default queue beside a ``task_queues`` list, routed queues, queues found on workers)
    are watched for messages nobody takes, but an empty one without a consumer is no
    failure: a route may name a queue that this deployment does not use.

    ``guessed`` is the default queue when nothing configures it (``-b`` without an app):
    Celery's ``celery`` is then only a guess at where tasks go. It stays required until
    the answering workers are known; when they consume other queues and not it,
    :meth:`settle_guess` drops the requirement (messages waiting in it still count).
    """

    names: list[str] = field(default_factory=list)
    required: set[str] = field(default_factory=set)
    unlisted_routers: list[str] = field(default_factory=list)
    consumed_added: list[str] = field(default_factory=list)
    guessed: str | None = None

    def add(self, names: Iterable[str], *, required: bool = False) -> list[str]:
        """Append the names not yet watched; return those that were new."""
        new = []
        for name in names:
            if not name:
                continue
            if name not in self.names:
                self.names.append(name)
                new.append(name)
            if required:
                self.required.add(name)
        return new

    def settle_guess(self, consumed: Iterable[str]) -> None:
        """A guessed default queue no answering worker consumes is not required after all."""
        consumed = set(consumed)
        if self.guessed and consumed and self.guessed not in consumed:
            self.required.discard(self.guessed)


def _queue_name(queue: Any) -> str | None:
    """A queue's name from a kombu ``Queue``, a ``{"queue": ...}`` dict, or a plain name."""
    if isinstance(queue, str):
        return queue or None
    name = getattr(queue, "name", None)
    return str(name) if name else None


def configured_watch_list(conf: Any, queues: Iterable[str] = (), *, guess_default: bool = False) -> WatchList:
    """The watch list before any worker answered: ``-Q`` alone, or the app's configuration.

    ``guess_default``: no app configures the default queue (``-b`` alone), so it is a guess.
    """
    watch = WatchList()
    explicit = list(queues)
    if explicit:
        watch.add(explicit, required=True)
        return watch
    configured = conf.task_queues
    default = conf.task_default_queue or "celery"
    if configured:
        names = [_queue_name(q) for q in configured]  # a dict form iterates over its names
        watch.add([n for n in names if n], required=True)
        watch.add([default])
    else:
        watch.add([default], required=True)
        watch.guessed = default if guess_default else None
    routed, unlisted = routed_queues(conf.task_routes)
    watch.add(routed)
    watch.unlisted_routers = unlisted
    return watch


def routed_queues(routes: Any) -> tuple[list[str], list[str]]:
    """Queue names ``task_routes`` sends tasks to, and the routers that cannot be listed.

    The forms Celery accepts: a dict ``{pattern: route}`` (exact names, globs, compiled
    regexes as keys), a list or tuple of such dicts or of ``(pattern, route)`` pairs, a
    router function or class, or a string naming one. A route is a queue name or a dict
    whose ``queue`` is a name or a kombu ``Queue``. A router function decides per call,
    so its queues cannot be known in advance; a route with an exchange but no queue goes
    wherever the broker's bindings send it. Both are reported, not guessed.
    """
    names: list[str] = []
    unlisted: list[str] = []
    if not routes:
        return names, unlisted
    entries = routes if isinstance(routes, (list, tuple)) else [routes]
    for entry in entries:
        if isinstance(entry, Mapping):
            _map_route(entry.items(), names, unlisted)
        elif isinstance(entry, (list, tuple)):
            pairs = [p for p in entry if isinstance(p, (list, tuple)) and len(p) == 2]
            if len(pairs) == len(entry):
                _map_route(pairs, names, unlisted)
            else:
                unlisted.append(f"a route list of unknown shape {_describe(entry)}")
        else:
            unlisted.append(f"router {_describe(entry)}")
    return list(dict.fromkeys(names)), unlisted


def _map_route(pairs: Iterable[Any], names: list[str], unlisted: list[str]) -> None:
    for pattern, route in pairs:
        if isinstance(route, Mapping):
            queue = _queue_name(route.get("queue"))
            if queue:
                names.append(queue)
            elif route.get("exchange") or route.get("routing_key"):
                unlisted.append(f"route {_describe(pattern)} (an exchange or routing key, no queue)")
        else:
            queue = _queue_name(route)
            if queue:
                names.append(queue)


def _describe(thing: Any) -> str:
    """A short, credential-free name for a router: its import path, or its pattern."""
    if isinstance(thing, str):
        return repr(thing)
    pattern = getattr(thing, "pattern", None)
    if isinstance(pattern, str):
        return repr(pattern)
    target = thing if callable(thing) and hasattr(thing, "__qualname__") else type(thing)
    module = getattr(target, "__module__", "") or ""
    qualname = getattr(target, "__qualname__", None) or type(thing).__name__
    return f"{module}.{qualname}" if module else str(qualname)


def consumed_queues(consumed: Mapping[str, Iterable[str]]) -> list[str]:
    """Every queue some answering worker consumes, in a stable order (sorted by name)."""
    return sorted({str(q) for queues in consumed.values() for q in queues if q})
