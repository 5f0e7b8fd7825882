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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from celery_probe.cli.main import _settings_from
from celery_probe.cli.options import (
    SERVER,
    SERVER_AUTH,
    SectionedCommand,
    in_section,
    setting_options,
    targets_file_option,
)
from celery_probe.config.durations import parse_interval as parse_duration_interval
from celery_probe.errors import ProbeUsageError
from celery_probe.config.settings import HTTP, OUTPUT, PROBES, TARGET, _parse_env_name, _parse_int, require_target

if TYPE_CHECKING:
    from celery_probe.run.runner import RunMode

DEFAULT_PREFIX = "/api/interactions"  # repeated from celery_probe.serve.app, which needs the extra
DEFAULT_HEADER_TIMEOUT = 10.0  # repeated from celery_probe.serve.header_deadline, which needs the extra
MIN_HEADER_TIMEOUT, MAX_HEADER_TIMEOUT = 0.5, 3600.0
DEFAULT_WARM_SESSIONS = 64  # repeated from celery_probe.run.resident.MAX_WARM (64 ms to import at each command)
MAX_WARM_SESSIONS = 10_000
RUNS_PER_CPU = 2  # repeated from celery_probe.run.runner.RUNS_PER_CPU, for --help
MAX_RUNS_AT_ONCE = 1000  # a typo's bound: a thousand runs starting together is no turn-taking at all


def parse_port(raw: str) -> int:
    return _parse_int("port", raw, "--port", lo=0, hi=65535)


def parse_interval(raw: str) -> float:
    return parse_duration_interval(raw, "--interval")


def parse_header_timeout(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ProbeUsageError(f"invalid header timeout {raw!r}: is not a number (from --header-timeout)") from None
    if not math.isfinite(value) or not MIN_HEADER_TIMEOUT <= value <= MAX_HEADER_TIMEOUT:
        raise ProbeUsageError(f"invalid header timeout {raw!r}: must be between {MIN_HEADER_TIMEOUT:g} and "
                              f"{MAX_HEADER_TIMEOUT:g} seconds (from --header-timeout)")
    return value


def run_mode(fresh_runs: bool, warm_sessions: str, runs_at_once: str | None) -> RunMode:
    """How serve starts its runs, from ``--fresh-runs``, ``--warm-sessions`` and ``--runs-at-once``."""
    from celery_probe.run.runner import RunMode

    warm = _parse_int("warm sessions", warm_sessions, "--warm-sessions", lo=0, hi=MAX_WARM_SESSIONS)
    at_once = None if runs_at_once is None else _parse_int("runs at once", runs_at_once, "--runs-at-once",
                                                           lo=1, hi=MAX_RUNS_AT_ONCE)
    return RunMode(resident=not fresh_runs, warm_sessions=warm, runs_at_once=at_once)


def parse_secret_path(raw: str | None, flag: str) -> Path | None:
    """The file a credential is read from; reading it (and every error) is at start-up."""
    if raw is None:
        return None
    if not raw.strip():
        raise ProbeUsageError(f"invalid {flag.lstrip('-')} {raw!r}: is empty (from {flag})")
    return Path(raw).expanduser()


@dataclass(frozen=True)
class _Guard:
    """What protects the HTTP side: the credential sources, --protect-health and --header-timeout."""

    header_timeout: float
    token_env: str | None
    token_file: Path | None
    basic_env: str | None
    basic_file: Path | None
    protect_health: bool

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> _Guard:
        """Pop serve's own options from ``raw`` and check them (the names, not yet the secrets)."""
        return cls(
            header_timeout=parse_header_timeout(raw.pop("header_timeout")),
            token_env=_parse_env_name("auth-token-env", raw.pop("auth_token_env"), "--auth-token-env"),
            token_file=parse_secret_path(raw.pop("auth_token_file"), "--auth-token-file"),
            basic_env=_parse_env_name("basic-auth-env", raw.pop("basic_auth_env"), "--basic-auth-env"),
            basic_file=parse_secret_path(raw.pop("basic_auth_file"), "--basic-auth-file"),
            protect_health=bool(raw.pop("protect_health")),
        )

    def credentials(self) -> Any:
        """The credentials, read now (one line and exit 64 when they cannot be); None without any."""
        from celery_probe.serve.credentials import load_credentials

        auth = load_credentials(token_env=self.token_env, token_file=self.token_file,
                                basic_env=self.basic_env, basic_file=self.basic_file)
        if self.protect_health and auth is None:
            raise ProbeUsageError("--protect-health needs a credential: --auth-token-env/-file or --basic-auth-env/-file")
        return auth

    def summary(self, auth: Any) -> str:
        """How serve is protected, for its start-up line (the schemes, never a credential)."""
        if auth is None:
            return ""
        scope = "every route" if self.protect_health else "every route but health"
        return f"; {' or '.join(auth.schemes).lower()} authentication on {scope}"


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
    click.option("--fresh-runs", is_flag=True,
                 help="Start every probe run as a fresh interpreter: no resident runner forking runs, "
                      "no warm sessions (slower and costlier: docs/production.md)."),
    click.option("--warm-sessions", default=str(DEFAULT_WARM_SESSIONS), show_default=True, metavar="N",
                 help="Keep at most N warm sessions at once, one per target, about 20 MB each; "
                      "targets beyond them get plain forked runs (0: none)."),
    click.option("--runs-at-once", metavar="N",
                 help="At most N probe runs in their first second at once, all targets together; a run "
                      f"due meanwhile waits its turn (default: {RUNS_PER_CPU} per CPU serve may use, a "
                      "container's CPU limit counted)."),
    click.option("--header-timeout", default=f"{DEFAULT_HEADER_TIMEOUT:g}", show_default=True, metavar="SECONDS",
                 help="Close a connection whose request line and headers are not all in after this long."),
)
@in_section(
    SERVER_AUTH,
    click.option("--auth-token-env", metavar="NAME",
                 help="Require `Authorization: Bearer TOKEN`, TOKEN being variable NAME's value."),
    click.option("--auth-token-file", metavar="PATH",
                 help="Require `Authorization: Bearer TOKEN`, TOKEN being the content of file PATH."),
    click.option("--basic-auth-env", metavar="NAME",
                 help="Require basic authentication with the USER:PASSWORD in variable NAME."),
    click.option("--basic-auth-file", metavar="PATH",
                 help="Require basic authentication with the USER:PASSWORD in file PATH."),
    click.option("--protect-health", is_flag=True,
                 help="The health JSON and /healthz need the credential too (public by default)."),
)
def serve(host: str, port: str, interval: str, prefix: str, targets_file: Path | None, exporter_metrics: bool,
          fresh_runs: bool, warm_sessions: str, runs_at_once: str | None, **raw: Any) -> int:
    """Serve the latest verdict over HTTP: health JSON, /healthz, /metrics and ops-alerts.

    Probes run in the background every INTERVAL seconds, one at a time per target, each in
    a child process with a hard timeout; requests never cause a probe run. With --targets,
    every [targets.NAME] of the file gets its own loop and routes under /targets/NAME
    (SIGHUP reads the file again).
    """
    port_number, every, path_prefix = parse_port(port), parse_interval(interval), parse_prefix(prefix)
    guard = _Guard.parse(raw)
    runs = run_mode(fresh_runs, warm_sessions, runs_at_once)
    if targets_file is not None:
        return _serve_targets(targets_file, host, port_number, every, path_prefix, exporter_metrics, guard, raw,
                              runs=runs)
    settings = _settings_from(raw, remediation=False)  # serve never remediates
    require_target(settings)
    _require_serve_extra()
    from celery_probe.serve.app import make_app

    auth = guard.credentials()
    report_dir = _report_dir(settings)
    sock = bind(host, port_number)
    _log_to_stderr()
    app = make_app(settings, interval=every, prefix=path_prefix, report_dir=report_dir,
                   exporter_metrics=exporter_metrics, auth=auth, protect_health=guard.protect_health,
                   runs=runs)
    return _run_server(app, sock, f"{path_prefix}/health/celery, /healthz, /metrics "
                                  f"({settings.describe_target()}, a probe run every {every:g}s"
                                  f"{guard.summary(auth)})", guard.header_timeout)


def _serve_targets(targets_file: Path, host: str, port: int, every: float, path_prefix: str,
                   exporter_metrics: bool, guard: _Guard, raw: dict[str, Any], *, runs: RunMode) -> int:
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

    auth = guard.credentials()
    specs = read()
    report_dir = _report_dir(settings)  # each target's history goes in REPORT_DIR/NAME
    sock = bind(host, port)
    _log_to_stderr()
    app = make_fleet_app(specs, prefix=path_prefix, report_dir=report_dir, reload_from=read,
                         exporter_metrics=exporter_metrics, auth=auth, protect_health=guard.protect_health,
                         runs=runs)
    return _run_server(app, sock, f"{path_prefix}/health/celery, /healthz, /metrics, /targets/NAME/... "
                                  f"({len(specs)} targets of {targets_file}; SIGHUP reads it again"
                                  f"{guard.summary(auth)})", guard.header_timeout)


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


def _run_server(app: Any, sock: socket.socket, what: str, header_timeout: float) -> int:
    """Run ``app`` under uvicorn on the bound ``sock``; 0 after a clean stop."""
    import uvicorn

    from celery_probe.serve.header_deadline import protocol_with_header_deadline
    from celery_probe.serve.quiet_server import QuietServer

    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if sock.family == socket.AF_INET6 else bound[0]
    click.echo(f"celery-probe serve: http://{shown}:{bound[1]}{what}", err=True)
    # http: uvicorn's h11 protocol plus a deadline on the request head, which uvicorn lacks
    # (celery_probe.serve.header_deadline); access_log off: nothing of a request is logged.
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5, server_header=False,
                            http=protocol_with_header_deadline(header_timeout))
    server = QuietServer(config)  # uvicorn's server, ticking once a second instead of ten times
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
