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
from pathlib import Path
from typing import Any

import click

from celery_probe.cli.main import _settings_from
from celery_probe.cli.options import SERVER, SERVER_AUTH, SectionedCommand, in_section, setting_options
from celery_probe.errors import ProbeUsageError
from celery_probe.config.settings import HTTP, OUTPUT, PROBES, TARGET, _parse_env_name, _parse_int, require_target

DEFAULT_PREFIX = "/api/interactions"  # repeated from celery_probe.serve.app, which needs the extra
MIN_INTERVAL, MAX_INTERVAL = 0.5, 86_400.0
DEFAULT_HEADER_TIMEOUT = 10.0  # repeated from celery_probe.serve.header_deadline, which needs the extra
MIN_HEADER_TIMEOUT, MAX_HEADER_TIMEOUT = 0.5, 3600.0


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


def parse_header_timeout(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ProbeUsageError(f"invalid header timeout {raw!r}: is not a number (from --header-timeout)") from None
    if not math.isfinite(value) or not MIN_HEADER_TIMEOUT <= value <= MAX_HEADER_TIMEOUT:
        raise ProbeUsageError(f"invalid header timeout {raw!r}: must be between {MIN_HEADER_TIMEOUT:g} and "
                              f"{MAX_HEADER_TIMEOUT:g} seconds (from --header-timeout)")
    return value


def parse_secret_path(raw: str | None, flag: str) -> Path | None:
    """The file a credential is read from; reading it (and every error) is at start-up."""
    if raw is None:
        return None
    if not raw.strip():
        raise ProbeUsageError(f"invalid {flag.lstrip('-')} {raw!r}: is empty (from {flag})")
    return Path(raw).expanduser()


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
def serve(host: str, port: str, interval: str, prefix: str, header_timeout: str, auth_token_env: str | None,
          auth_token_file: str | None, basic_auth_env: str | None, basic_auth_file: str | None,
          protect_health: bool, **raw: Any) -> int:
    """Serve the latest verdict over HTTP: health JSON, /healthz, /metrics and ops-alerts.

    Probes run in the background every INTERVAL seconds, one at a time, each in a child
    process with a hard timeout; requests never cause a probe run.
    """
    settings = _settings_from(raw, remediation=False)  # serve never remediates
    require_target(settings)
    port_number, every, path_prefix = parse_port(port), parse_interval(interval), parse_prefix(prefix)
    head_deadline = parse_header_timeout(header_timeout)
    token_env = _parse_env_name("auth-token-env", auth_token_env, "--auth-token-env")
    basic_env = _parse_env_name("basic-auth-env", basic_auth_env, "--basic-auth-env")
    token_file = parse_secret_path(auth_token_file, "--auth-token-file")
    basic_file = parse_secret_path(basic_auth_file, "--basic-auth-file")
    try:
        import uvicorn

        from celery_probe.serve.app import make_app
        from celery_probe.serve.credentials import load_credentials
        from celery_probe.serve.header_deadline import protocol_with_header_deadline
    except ImportError as exc:
        raise ProbeUsageError(
            f"celery-probe serve needs the 'serve' extra: pip install 'celery-probe[serve]' ({exc})"
        ) from None
    auth = load_credentials(token_env=token_env, token_file=token_file, basic_env=basic_env, basic_file=basic_file)
    if protect_health and auth is None:
        raise ProbeUsageError("--protect-health needs a credential: --auth-token-env/-file or --basic-auth-env/-file")
    report_dir = None
    if "report_dir" in settings.sources:  # only when asked for: a private folder per run otherwise
        from celery_probe.storage.reports import check_report_dir

        check_report_dir(settings.report_dir)
        report_dir = settings.report_dir
    sock = bind(host, port_number)
    _log_to_stderr()
    app = make_app(settings, interval=every, prefix=path_prefix, report_dir=report_dir, auth=auth,
                   protect_health=protect_health)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if sock.family == socket.AF_INET6 else bound[0]
    click.echo(
        f"celery-probe serve: http://{shown}:{bound[1]}{path_prefix}/health/celery, /healthz, /metrics "
        f"({settings.describe_target()}, a probe run every {every:g}s"
        f"{_auth_summary(auth.schemes, protect_health) if auth is not None else ''})",
        err=True,
    )
    # http: uvicorn's h11 protocol plus a deadline on the request head, which uvicorn lacks
    # (celery_probe.serve.header_deadline); access_log off: nothing of a request is logged.
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5, server_header=False,
                            http=protocol_with_header_deadline(head_deadline))
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0 if server.started else 1


def _auth_summary(schemes: tuple[str, ...], protect_health: bool) -> str:
    """How serve is protected, for its start-up line (the schemes, never a credential)."""
    scope = "every route" if protect_health else "every route but health"
    return f", {' or '.join(schemes).lower()} authentication on {scope}"


def _log_to_stderr() -> None:
    """Status changes of the loop, one line each, on stderr."""
    logger = logging.getLogger("celery_probe.serve")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
