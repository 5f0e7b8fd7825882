"""``celery-probe serve``: the verdict over HTTP under uvicorn, with a background probe loop.

Takes the same target options as ``run``. The listening socket is bound here, before
uvicorn starts, so a port in use or a bad host is one line and exit 64 instead of a log
record and a bare exit. Needs the ``serve`` extra (Starlette, uvicorn, prometheus_client).
"""

from __future__ import annotations

import logging
import math
import socket
import sys
from typing import Any

import click

from celery_probe.cli.main import _settings_from
from celery_probe.cli.options import SERVER, SectionedCommand, in_section, setting_options
from celery_probe.errors import ProbeUsageError
from celery_probe.config.settings import HTTP, OUTPUT, PROBES, TARGET, _parse_int, require_target

DEFAULT_PREFIX = "/api/interactions"  # repeated from celery_probe.serve.app, which needs the extra
MIN_INTERVAL, MAX_INTERVAL = 0.5, 86_400.0


def parse_port(raw: str) -> int:
    return _parse_int("port", raw, "--port", lo=0, hi=65535)


def parse_interval(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ProbeUsageError(f"invalid interval {raw!r}: is not a number (from --interval)") from None
    if not math.isfinite(value) or not MIN_INTERVAL <= value <= MAX_INTERVAL:
        raise ProbeUsageError(
            f"invalid interval {raw!r}: must be between {MIN_INTERVAL:g} and {MAX_INTERVAL:g} seconds (from --interval)"
        )
    return value


def parse_prefix(raw: str) -> str:
    value = raw.strip()
    if any(ch.isspace() or ch in "?#%" or ord(ch) < 32 for ch in value):
        raise ProbeUsageError(f"invalid prefix {raw!r}: must be a URL path like /api/interactions (from --prefix)")
    return "/" + value.strip("/") if value.strip("/") else ""


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; an operator mistake becomes one line (exit 64)."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        raise ProbeUsageError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc} (from --host)") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ProbeUsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (from --host/--port)") from None
    return sock


@click.command(cls=SectionedCommand)
@setting_options(TARGET, PROBES, OUTPUT, HTTP)
@in_section(
    SERVER,
    click.option("--host", default="127.0.0.1", show_default=True, metavar="HOST", help="Address to listen on."),
    click.option("--port", default="8001", show_default=True, metavar="PORT", help="Port to listen on (0: any free port)."),
    click.option("--interval", default="15", show_default=True, metavar="SECONDS",
                 help="Seconds between the starts of two probe runs."),
    click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, metavar="PATH",
                 help="Path prefix of the health and ops-alerts routes."),
)
def serve(host: str, port: str, interval: str, prefix: str, **raw: Any) -> int:
    """Serve the latest verdict over HTTP: health JSON, /healthz, /metrics and ops-alerts.

    Probes run in the background every INTERVAL seconds, one at a time, each in a child
    process with a hard timeout; requests never cause a probe run.
    """
    settings = _settings_from(raw, remediation=False)  # serve never remediates
    require_target(settings)
    port_number, every, path_prefix = parse_port(port), parse_interval(interval), parse_prefix(prefix)
    try:
        import uvicorn

        from celery_probe.serve.app import make_app
    except ImportError as exc:
        raise ProbeUsageError(
            f"celery-probe serve needs the 'serve' extra: pip install 'celery-probe[serve]' ({exc})"
        ) from None
    report_dir = None
    if "report_dir" in settings.sources:  # only when asked for: a private folder per run otherwise
        from celery_probe.storage.reports import check_report_dir

        check_report_dir(settings.report_dir)
        report_dir = settings.report_dir
    sock = bind(host, port_number)
    _log_to_stderr()
    app = make_app(settings, interval=every, prefix=path_prefix, report_dir=report_dir)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if sock.family == socket.AF_INET6 else bound[0]
    click.echo(
        f"celery-probe serve: http://{shown}:{bound[1]}{path_prefix}/health/celery, /healthz, /metrics "
        f"({settings.describe_target()}, a probe run every {every:g}s)",
        err=True,
    )
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5, server_header=False)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0 if server.started else 1


def _log_to_stderr() -> None:
    """Status changes of the loop, one line each, on stderr."""
    logger = logging.getLogger("celery_probe.serve")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
