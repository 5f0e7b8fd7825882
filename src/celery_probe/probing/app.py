"""The Celery app under test: loaded from ``-A`` or built from a broker URL, then bounded.

Bounding means every socket the app opens has a timeout and no connection is retried:
a probe must learn within its deadline that the broker does not answer, not wait out
kombu's retry schedule (about 6 s on a refused port) or block forever (a frozen broker).

Two more things are settled here. The URLs to probe are pinned on the app, because Celery
reads ``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND`` before ``app.conf`` and would
otherwise probe the environment's broker instead of the one the operator named. And a
failure to load is classified: an -A path that names nothing is the operator's typo
(:class:`ProbeUsageError`, exit 64); a named module whose own code or settings fail is the
deployment's environment failing (:class:`AppLoadError`, an ``unknown`` verdict).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

from celery_probe.errors import AppLoadError, ProbeUsageError
from celery_probe.config.settings import CELERY_BROKER_URL_SOURCE, Settings
from celery_probe.config.urls import scrub

if TYPE_CHECKING:
    from celery import Celery

APP_CONFIG_ERROR_CODE = "celery_app_config_error"  # the app's own code or settings failed to load

# Celery's Settings reads these variables before app.conf (celery.app.utils.Settings): while
# one is exported, a URL written on app.conf is silently ignored.
CELERY_URL_VARIABLES = {
    "CELERY_BROKER_URL": "broker_url",
    "CELERY_BROKER_READ_URL": "broker_read_url",
    "CELERY_BROKER_WRITE_URL": "broker_write_url",
    "CELERY_RESULT_BACKEND": "result_backend",
}


class _Missing(Exception):
    """The module an -A path names (or one of its packages) does not exist."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def error_line(exc: BaseException) -> str:
    """``Type: last line of the message``, passwords in URLs masked: what a traceback ends with."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[-1]}" if lines else type(exc).__name__
    return str(scrub(text))


def _import(name: str, path: str) -> ModuleType:
    """Import ``name`` for the -A path ``path``; tell a missing name from a failing app."""
    try:
        return importlib.import_module(name)
    except KeyboardInterrupt:
        raise
    except ModuleNotFoundError as exc:
        # Only the named module itself, or a package on its way, is the operator's typo: a
        # module missing further down the app's own imports is the app's code failing.
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise _Missing(exc.name) from None
        raise AppLoadError(path, f"app {path!r} did not load: {error_line(exc)}") from None
    except BaseException as exc:  # an operator's module may raise anything, SystemExit too
        raise AppLoadError(path, f"app {path!r} did not load: {error_line(exc)}") from None


def _is_module_path(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def _app_in(module: ModuleType, path: str) -> Any:
    """The app of a module, found as ``celery -A`` finds it, or None."""
    from celery import Celery

    for name in ("app", "celery"):
        found = getattr(module, name, None)
        if isinstance(found, Celery):
            return found
    if getattr(module, "__path__", None):  # a package: its celery submodule (proj/celery.py)
        try:
            found = _app_in(_import(f"{path}.celery", path), f"{path}.celery")
        except _Missing:
            found = None
        if found is not None:
            return found
    return next((value for value in vars(module).values() if isinstance(value, Celery)), None)


def find_app(path: str, source: str = "-A/--app") -> Any:
    """What an -A path names (``proj``, ``proj.mod``, ``proj.mod.attr``, ``proj.mod:attr``).

    Raises :class:`ProbeUsageError` when the path itself names nothing (a typo) and
    :class:`AppLoadError` when the named module exists but its code fails.
    """

    def usage(why: str) -> ProbeUsageError:
        return ProbeUsageError(f"cannot load Celery app {path!r}: {why} (from {source})")

    module_name, colon, attribute = path.partition(":")
    if not _is_module_path(module_name) or (colon and not attribute.isidentifier()):
        raise usage("not a module path like proj, proj.celery or proj.celery:app")
    if colon:
        try:
            module = _import(module_name, path)
        except _Missing as missing:
            raise usage(f"ModuleNotFoundError: no module named {missing.name!r}") from None
        if not hasattr(module, attribute):
            raise usage(f"module {module_name!r} has no attribute {attribute!r}")
        return getattr(module, attribute)
    try:
        module = _import(path, path)
    except _Missing as missing:
        parent, _, last = path.rpartition(".")
        if missing.name != path or not parent:
            raise usage(f"ModuleNotFoundError: no module named {missing.name!r}") from None
        try:  # proj.celery.app: the attribute app of the module proj.celery
            module = _import(parent, path)
        except _Missing as again:
            raise usage(f"ModuleNotFoundError: no module named {again.name!r}") from None
        if not hasattr(module, last):
            raise usage(f"module {parent!r} has no attribute or submodule {last!r}") from None
        return getattr(module, last)
    found = _app_in(module, path)
    if found is None:
        raise usage(f"module {path!r} holds no Celery app (no attribute app or celery"
                    + (", no submodule celery" if getattr(module, "__path__", None) else "") + ")")
    return found


def import_app(path: str, source: str = "-A/--app") -> Celery:
    """Import a Celery app the way ``celery -A`` does (``proj``, ``proj.mod``, ``proj:app``)."""
    from celery import Celery

    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    found = find_app(path, source)
    if not isinstance(found, Celery):
        raise ProbeUsageError(
            f"cannot load Celery app {path!r}: it is a {type(found).__name__}, not a Celery app (from {source})"
        )
    return found


def build_app(settings: Settings) -> Celery:
    """The app to probe: the operator's (with URL overrides) or a bare one for a broker URL.

    Raises :class:`AppLoadError` when the app's module or its configuration fails. Django
    configures Celery lazily (``config_from_object("django.conf:settings")``), so a settings
    error surfaces at the first read of ``app.conf``, here, not at import.
    """
    from celery import Celery

    if not settings.app:
        app = Celery("celery_probe", set_as_current=False)
        pin_urls(app, settings)
        bound_app(app, settings.deadline)
        return app
    app = import_app(settings.app, settings.sources.get("app", "-A/--app"))
    try:
        pin_urls(app, settings)
        bound_app(app, settings.deadline)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # the app's settings module may raise anything
        raise AppLoadError(
            settings.app, f"app {settings.app!r} did not load its configuration: {error_line(exc)}"
        ) from None
    return app


def pin_urls(app: Celery, settings: Settings) -> None:
    """Write the broker and backend to probe on ``app.conf``, so that what the operator named wins.

    A URL the operator named (``-b``, ``--backend``, ``CELERY_PROBE_*``, ``pyproject.toml``)
    replaces the app's; otherwise each URL stays the one Celery itself would use, an
    exported ``CELERY_BROKER_URL`` included, as the workers of the same environment do.
    :func:`celery_url_variables_withheld` then keeps those variables from overriding it.
    """
    conf = app.conf
    pinned: dict[str, Any] = {
        key: getattr(conf, key) for variable, key in CELERY_URL_VARIABLES.items() if os.environ.get(variable)
    }
    # CELERY_BROKER_URL as the broker setting's last fallback is Celery's choice, not a name.
    named = settings.broker if settings.sources.get("broker") != CELERY_BROKER_URL_SOURCE else None
    if named:  # the named broker serves reads and writes alike
        pinned.update(broker_url=named, broker_read_url=None, broker_write_url=None)
    if settings.backend:
        pinned["result_backend"] = settings.backend
    for key, value in pinned.items():
        conf[key] = value


@contextlib.contextmanager
def celery_url_variables_withheld() -> Iterator[None]:
    """Hide Celery's URL variables from this process while its probes run, then restore them.

    Scoped rather than removed for good: a command run after the probes (``--on-down``)
    and the worker processes of ``run --targets`` still see the environment they were given.
    """
    saved = {name: os.environ.pop(name) for name in CELERY_URL_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def probed_broker_url(app: Celery) -> str | None:
    """The broker URL ``app`` probes (as pinned), whatever the environment says now."""
    with celery_url_variables_withheld():
        url = app.conf.broker_url
    return str(url) if url else None


REDIS_POLL_STEP = 0.05


def _capped(options: Any, seconds: float, keys: tuple[str, ...]) -> dict[str, Any]:
    opts = dict(options or {})
    for key in keys:
        current = opts.get(key)
        opts[key] = seconds if not isinstance(current, (int, float)) else min(float(current), seconds)
    return opts


def bound_app(app: Celery, deadline: float) -> None:
    """Give every connection of ``app`` a timeout within ``deadline`` and no retries."""
    from celery_probe.probing.redis_access import transport_name

    conf = app.conf
    transport_options = {
        **_capped(conf.broker_transport_options, deadline, ("socket_timeout", "socket_connect_timeout")),
        "max_retries": 0,
        "retry_on_timeout": False,
    }
    if transport_name(str(conf.broker_url or "")) == "redis":
        # kombu's Redis transport waits for replies with BRPOP in steps of polling_interval
        # (default 1 s) and must finish a step before it can close the connection or listen
        # to a new reply queue: short steps keep a probe run from idling a second per wait.
        transport_options["polling_interval"] = REDIS_POLL_STEP
    conf.broker_transport_options = transport_options
    conf.result_backend_transport_options = _capped(
        conf.result_backend_transport_options, deadline, ("socket_timeout", "socket_connect_timeout")
    )
    conf.broker_connection_timeout = min(float(conf.broker_connection_timeout or deadline), deadline)
    conf.broker_connection_retry = False
    conf.broker_connection_max_retries = 0
    conf.task_publish_retry = False
    conf.redis_socket_timeout = deadline
    conf.redis_socket_connect_timeout = deadline
    conf.redis_retry_on_timeout = False
    conf.result_backend_always_retry = False
    conf.broker_heartbeat = 0
    # The workers create the result tables; a probe only reads, and a sqlite backend would
    # otherwise create its file (and tables) wherever the probe happens to run.
    conf.database_create_tables_at_setup = False
