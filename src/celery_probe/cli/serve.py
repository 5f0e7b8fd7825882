"""``celery-probe serve``: the verdict over HTTP under uvicorn, with a background probe loop.

Takes the same target options as ``run``. The listening socket is bound here, before
uvicorn starts, so a port in use or a bad host is one line and exit 64 instead of a log
record and a bare exit. Needs the ``serve`` extra (Starlette, uvicorn, prometheus_client).
"""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path
from typing import Any

import click

from celery_probe.cli.main import _settings_from
from celery_probe.cli.options import SERVER, SectionedCommand, in_section, setting_options, targets_file_option
from celery_probe.config.durations import parse_interval as parse_duration_interval
from celery_probe.errors import ProbeUsageError
from celery_probe.config.settings import HTTP, OUTPUT, PROBES, TARGET, _parse_int, require_target

DEFAULT_PREFIX = "/api/interactions"  # repeated from celery_probe.serve.app, which needs the extra


def parse_port(raw: str) -> int:
    return _parse_int("port", raw, "--port", lo=0, hi=65535)


def parse_interval(raw: str) -> float:
    return parse_duration_interval(raw, "--interval")


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
    targets_file_option(),
    click.option("--exporter-metrics", is_flag=True,
                 help="/metrics also serves celery-exporter's series (celery_worker_up, celery_queue_length, ...) "
                      "for its Grafana dashboards (docs/metrics.md)."),
)
def serve(host: str, port: str, interval: str, prefix: str, targets_file: Path | None, exporter_metrics: bool,
          **raw: Any) -> int:
    """Serve the latest verdict over HTTP: health JSON, /healthz, /metrics and ops-alerts.

    Probes run in the background every INTERVAL seconds, one at a time per target, each in
    a child process with a hard timeout; requests never cause a probe run. With --targets,
    every [targets.NAME] of the file gets its own loop and routes under /targets/NAME
    (SIGHUP reads the file again).
    """
    port_number, every, path_prefix = parse_port(port), parse_interval(interval), parse_prefix(prefix)
    if targets_file is not None:
        return _serve_targets(targets_file, host, port_number, every, path_prefix, exporter_metrics, raw)
    settings = _settings_from(raw, remediation=False)  # serve never remediates
    require_target(settings)
    _require_serve_extra()
    from celery_probe.serve.app import make_app

    report_dir = _report_dir(settings)
    sock = bind(host, port_number)
    _log_to_stderr()
    app = make_app(settings, interval=every, prefix=path_prefix, report_dir=report_dir,
                   exporter_metrics=exporter_metrics)
    return _run_server(app, sock, f"{path_prefix}/health/celery, /healthz, /metrics "
                                  f"({settings.describe_target()}, a probe run every {every:g}s)")


def _serve_targets(targets_file: Path, host: str, port: int, every: float, path_prefix: str,
                   exporter_metrics: bool, raw: dict[str, Any]) -> int:
    """``serve --targets FILE``: one probe loop and set of routes per target (serve/fleet.py)."""
    from celery_probe.cli.main import _cli_overrides

    if raw.get("app") or raw.get("broker"):
        raise ProbeUsageError("give either --targets FILE or -A/--app / -b/--broker, not both (from --targets)")
    settings = _settings_from(raw, remediation=False)  # the flags themselves are valid
    overrides = _cli_overrides(raw)
    _require_serve_extra()
    from celery_probe.serve.fleet import load_serve_targets
    from celery_probe.serve.fleet_app import make_fleet_app

    def read() -> dict[str, Any]:
        return load_serve_targets(targets_file, overrides, default_interval=every)

    specs = read()
    report_dir = _report_dir(settings)  # each target's history goes in REPORT_DIR/NAME
    sock = bind(host, port)
    _log_to_stderr()
    app = make_fleet_app(specs, prefix=path_prefix, report_dir=report_dir, reload_from=read,
                         exporter_metrics=exporter_metrics)
    return _run_server(app, sock, f"{path_prefix}/health/celery, /healthz, /metrics, /targets/NAME/... "
                                  f"({len(specs)} targets of {targets_file}; SIGHUP reads it again)")


def _report_dir(settings: Any) -> Path | None:
    """The report folder when one was asked for; None gives each run a private folder."""
    if "report_dir" not in settings.sources:
        return None
    from celery_probe.storage.reports import check_report_dir

    check_report_dir(settings.report_dir)
    return settings.report_dir


def _require_serve_extra() -> None:
    try:
        import uvicorn  # noqa: F401

        import celery_probe.serve.app  # noqa: F401
    except ImportError as exc:
        raise ProbeUsageError(
            f"celery-probe serve needs the 'serve' extra: pip install 'celery-probe[serve]' ({exc})"
        ) from None


def _run_server(app: Any, sock: socket.socket, what: str) -> int:
    """Run ``app`` under uvicorn on the bound ``sock``; 0 after a clean stop."""
    import uvicorn

    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if sock.family == socket.AF_INET6 else bound[0]
    click.echo(f"celery-probe serve: http://{shown}:{bound[1]}{what}", err=True)
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
