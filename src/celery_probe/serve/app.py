"""The verdict over HTTP: health JSON, a load-balancer status code, Prometheus metrics, ops-alerts.

Every route only reads the latest :class:`~celery_probe.serve.loop.Snapshot`; the probes run
in the background loop of :class:`~celery_probe.serve.loop.ProbeLoop`, never because of a
request. A public health URL therefore costs no broker traffic however often it is hit,
and it answers at once while the broker is frozen (with the last verdict, and its age).

Two ways to serve it:

* :func:`make_app` returns a standalone Starlette app whose lifespan runs the loop (what
  ``celery-probe serve`` runs under uvicorn);
* :class:`ProbeMiddleware` adds the same routes to an existing ASGI app (Starlette,
  FastAPI…) in one line, ``app.add_middleware(ProbeMiddleware, settings=settings)``, and
  ties the loop to that app's lifespan; paths it does not own pass through untouched.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from celery_probe.present.metrics import ServeLoopTotals, metric_families, render_for
from celery_probe.present.ops_alerts import get_ops_alerts
from celery_probe.serve.auth import AuthGate, Credentials, authorization_of, refuse, route_path
from celery_probe.run.runner import ProbeRunner, RunMode
from celery_probe.serve.loop import REAP_TIMEOUT, ProbeLoop, Snapshot
from celery_probe.config.settings import REMEDIATION, Settings, require_target, resolve_settings
from celery_probe.verdict.mapper import unknown_verdict
from celery_probe.verdict.model import HealthDocument, HealthzDocument, OpsAlertsDocument, Status, json_schema

DEFAULT_PREFIX = "/api/interactions"
DEFAULT_INTERVAL = 15.0
HEALTH_PATH = "/health/celery"
OPS_ALERTS_PATH = "/metrics/ops-alerts"
OPENAPI_PATH = "/openapi.json"
STATUS_PAGE_PATH = "/"
HTML = "text/html; charset=utf-8"
JSON = "application/json"
NO_STORE = "no-store"


@dataclass(frozen=True)
class _Published:
    """What a snapshot looks like on the wire, serialised once per run instead of per request."""

    snapshot: Snapshot
    health_tail: bytes  # the health document without its opening brace: age_s goes in front
    alerts: bytes


class ProbeService:
    """The probe loop plus the handlers that publish its latest verdict."""

    def __init__(
        self,
        settings: Settings,
        *,
        interval: float = DEFAULT_INTERVAL,
        prefix: str = DEFAULT_PREFIX,
        healthz_path: str | None = "/healthz",
        metrics_path: str | None = "/metrics",
        report_dir: Path | None = None,
        exporter_metrics: bool = False,
        runner: ProbeRunner | None = None,
        runs: RunMode = RunMode(),
    ) -> None:
        """``exporter_metrics``: /metrics also serves celery-exporter's series
        (:mod:`celery_probe.present.exporter_compat`); ``runner``: the resident runner shared
        by several targets' loops (``serve --targets``), else the loop has its own, started as
        ``runs`` says (``serve --fresh-runs``, ``--warm-sessions``)."""
        self.loop = ProbeLoop(settings, interval=interval, report_dir=report_dir, runner=runner, runs=runs)
        self.interval = interval
        self.exporter_metrics = exporter_metrics
        self._workers: dict[str, float] = {}  # worker -> Unix time it last answered (exporter metrics)
        # A verdict older than this means the loop stopped producing them (a run is bounded
        # by hard_timeout and its reaping by REAP_TIMEOUT): serve unknown, not old news.
        self.stale_after = interval + self.loop.hard_timeout + REAP_TIMEOUT + 1.0
        prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.paths: dict[str, Callable[[Headers], Response]] = {
            prefix + HEALTH_PATH: self.health,
            prefix + OPS_ALERTS_PATH: self.ops_alerts,
        }
        # The routes that stay public under authentication unless serve --protect-health.
        self.health_paths = frozenset({prefix + HEALTH_PATH, *([healthz_path] if healthz_path else [])})
        if healthz_path:
            self.paths[healthz_path] = self.healthz
        if metrics_path:
            self.paths[metrics_path] = self.metrics
        self.openapi = openapi_document(prefix + HEALTH_PATH, prefix + OPS_ALERTS_PATH, healthz_path, metrics_path)
        # Behind a credential an answer is private: a shared cache must not hand a stored copy
        # to a request without one (RFC 9111 §3.5 lets it when the answer says "public").
        self.private_health = self.private_alerts = False
        self._published: _Published | None = None

    # ------------------------------------------------------------------ lifecycle

    def ensure_started(self) -> None:
        """Start the loop if no lifespan did (a host server run with lifespan off)."""
        if not self.loop.running:
            self.loop.start()

    async def shutdown(self) -> None:
        await self.loop.stop()

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        self.loop.start()
        try:
            yield
        finally:
            await self.shutdown()

    def routes(self) -> list[Route]:
        def endpoint(handler: Callable[[Headers], Response]) -> Callable[[Request], Any]:
            async def call(request: Request) -> Response:
                self.ensure_started()
                return handler(request.headers)

            return call

        return [Route(path, endpoint(handler), methods=["GET"]) for path, handler in self.paths.items()]

    # ------------------------------------------------------------------ what is served

    def _current(self) -> tuple[_Published, float | None]:
        """The published form of the latest snapshot and its age in seconds (None: no run yet)."""
        snapshot = self.loop.snapshot
        published = self._published
        if published is None or published.snapshot is not snapshot:
            published = self._published = _publish(snapshot, self.interval)
        if snapshot.produced_mono is None:
            return published, None
        return published, time.monotonic() - snapshot.produced_mono

    def _stale(self, published: _Published, age: float) -> _Published:
        queued = self.loop.queued_since
        why = "" if queued is None else (
            f"; the next run has waited {time.monotonic() - queued:.0f}s for one of serve's "
            f"{self.loop.runner.slots.size} run slots: more runs are due than fit (raise --runs-at-once "
            "or the intervals)")
        verdict = unknown_verdict(
            f"the latest verdict is {age:.0f}s old: no probe run has finished since "
            f"(one is due every {self.interval:g}s){why}",
            code="celery_probe_stale",
        )
        verdict["target"] = published.snapshot.verdict.get("target")
        return _publish(Snapshot(verdict, None, published.snapshot.produced_at, published.snapshot.produced_mono,
                                 published.snapshot.run), self.interval)

    def health(self, _headers: Headers | None = None) -> Response:
        """The latest verdict, its age and when it was produced; 200 whatever the status.

        ``Cache-Control: max-age`` is the time left until the next verdict is due, so a
        shared cache in front of this public URL can absorb traffic without ever serving a
        verdict older than the origin would (before the first run, and when stale:
        ``no-store``).
        """
        published, age, cache = self.served(private=self.private_health)
        age_text = b"null" if age is None else f"{age:.3f}".encode()
        body = b'{"age_s": ' + age_text + b", " + published.health_tail
        return Response(body, media_type=JSON, headers={"Cache-Control": cache})

    def protect(self, *, health: bool) -> None:
        """Mark the answers as behind a credential: ops-alerts always, the health JSON if ``health``."""
        self.private_alerts, self.private_health = True, health

    def served(self, *, private: bool = False) -> tuple[_Published, float | None, str]:
        """The verdict to serve (stale ones replaced), its age, and its Cache-Control value.

        Every answer of this target, and the fleet's overall answers, read it once per request,
        so a verdict that turns stale between two reads cannot show two statuses on one page.
        """
        published, age = self._current()
        if age is None:
            return published, age, NO_STORE
        if age > self.stale_after:
            return self._stale(published, age), age, NO_STORE
        scope = "private" if private else "public"
        return published, age, f"{scope}, max-age={max(0, math.floor(self.interval - age))}"

    def healthz(self, _headers: Headers | None = None) -> Response:
        """503 when the latest verdict is ``down``, else 200, for load balancers and Kubernetes.

        ``degraded`` answers 200: Celery still works, so taking traffic away would turn a
        slowdown into an outage. ``unknown`` answers 200 too: it says the probe lacks
        evidence (starting, misconfigured, stale), which is not evidence that Celery is down;
        the body and the ``X-Celery-Probe-Status`` header still say ``unknown``.
        """
        document = self.healthz_document()
        status = document["status"]
        return Response(json.dumps(document).encode(), status_code=503 if status == "down" else 200,
                        media_type=JSON, headers={"Cache-Control": NO_STORE, "X-Celery-Probe-Status": status})

    def healthz_document(self) -> HealthzDocument:
        """What ``/healthz`` says of this target: its status, the verdict's age and its time."""
        published, age, _cache = self.served()
        verdict = published.snapshot.verdict
        return {
            "status": verdict.get("status") or "unknown",
            "age_s": None if age is None else round(age, 3),
            "checked_at": verdict.get("checked_at"),
        }

    def metrics(self, headers: Headers | None = None) -> Response:
        """Metrics of the latest verdict, built by :mod:`celery_probe.present.metrics`.

        OpenMetrics when the scraper's ``Accept`` asks for it (Prometheus does), else the
        0.0.4 text format.
        """
        snapshot, last_run = self.loop.snapshot, self.loop.last_run  # last_run: restored before the first run
        families = metric_families(
            snapshot.verdict, snapshot.report, produced_at=last_run,
            last_success=self.loop.last_success, now=time.time() if last_run is not None else None,
            counters=ServeLoopTotals(self.loop.runs_started, self.loop.runs_killed),
        )
        if self.exporter_metrics:
            from celery_probe.present.exporter_compat import exporter_families, remember_workers

            if snapshot.produced_at is not None:
                self._workers = remember_workers(self._workers, snapshot.verdict, snapshot.produced_at)
            families = [*families, *exporter_families(snapshot.verdict, remembered=self._workers)]
        body, content_type = render_for(families, headers.get("accept") if headers is not None else None)
        return Response(body, headers={"Content-Type": content_type, "Cache-Control": NO_STORE})

    def ops_alerts(self, _headers: Headers | None = None) -> Response:
        """The ops-alerts document of the latest verdict (:func:`celery_probe.present.ops_alerts.get_ops_alerts`)."""
        published, _age, cache = self.served(private=self.private_alerts)
        return Response(published.alerts, media_type=JSON, headers={"Cache-Control": cache})


def _publish(snapshot: Snapshot, interval: float) -> _Published:
    produced = (
        datetime.fromtimestamp(snapshot.produced_at, tz=timezone.utc).isoformat(timespec="milliseconds")
        if snapshot.produced_at is not None else None
    )
    document = {"produced_at": produced, "interval_s": interval, **snapshot.verdict}
    document.pop("age_s", None)
    health = json.dumps(document, default=str).encode()
    alerts = json.dumps(get_ops_alerts(snapshot.verdict), default=str).encode()
    return _Published(snapshot, health[1:], alerts)


def openapi_document(health: str, ops_alerts: str, healthz: str | None, metrics: str | None) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the routes :class:`ProbeService` serves (all GET, no parameters).

    The bodies' schemas are generated from the verdict model (:mod:`celery_probe.verdict.model`)
    into ``components/schemas``: the description is of what the mapper builds, not a copy of it.
    """
    no_store = {"Cache-Control": {"schema": {"type": "string", "const": NO_STORE}}}
    cached = {"Cache-Control": {"description": "public, max-age=N (seconds until the next verdict; private behind "
                                               "a credential), or no-store",
                                "schema": {"type": "string", "pattern": r"^(no-store|(public|private), max-age=\d+)$"}}}
    schemas: dict[str, Any] = {}
    verdict = json_schema(HealthDocument, schemas)
    healthz_body = json_schema(HealthzDocument, schemas)
    alerts_body = json_schema(OpsAlertsDocument, schemas)

    def get(summary: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {"get": {"summary": summary, "responses": responses}}

    def json_answer(description: str, schema: dict[str, Any], headers: dict[str, Any]) -> dict[str, Any]:
        return {"description": description, "headers": headers, "content": {JSON: {"schema": schema}}}

    paths = {
        health: get("The latest verdict, its age and when it was produced", {
            "200": json_answer("the verdict, whatever its status", verdict, cached)}),
        ops_alerts: get("The ops-alerts document of the latest verdict", {
            "200": json_answer("alerts and the six keys of get_celery_health()", alerts_body, cached)}),
    }
    status_header = {**no_store, "X-Celery-Probe-Status": {"schema": json_schema(Status)}}
    if healthz:
        paths[healthz] = get("Status for load balancers: 503 only when down", {
            "200": json_answer("healthy, degraded or unknown", healthz_body, status_header),
            "503": json_answer("down", healthz_body, status_header),
        })
    if metrics:
        paths[metrics] = get("Metrics of the latest verdict: OpenMetrics when Accept asks for it, else Prometheus text", {
            "200": {"description": "metrics", "headers": no_store, "content": METRICS_CONTENT},
        })
    return openapi_wrapper(paths, schemas, "The latest Celery health verdict; requests never start a probe run.")


METRICS_CONTENT = {"text/plain": {"schema": {"type": "string"}},
                   "application/openmetrics-text": {"schema": {"type": "string"}}}
"""What /metrics answers: Prometheus text, or OpenMetrics when the scraper's Accept asks for it."""


def openapi_wrapper(paths: dict[str, Any], schemas: dict[str, Any], description: str) -> dict[str, Any]:
    """An OpenAPI 3.1 document of ``paths`` with the model's ``schemas`` as its components."""
    from celery_probe import __version__

    return {
        "openapi": "3.1.0",
        "info": {"title": "celery-probe", "version": __version__, "description": description},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def with_security(document: dict[str, Any], auth: Credentials, public: Collection[str]) -> dict[str, Any]:
    """``document`` saying which schemes serve accepts, and that every route outside ``public`` may answer 401."""
    schemes = {"Bearer": {"type": "http", "scheme": "bearer"}, "Basic": {"type": "http", "scheme": "basic"}}
    refused = {"description": "no credential, or a wrong one",
               "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
               "content": {"text/plain": {"schema": {"type": "string"}}}}
    paths: dict[str, Any] = {}
    for path, item in document["paths"].items():
        if path in public:
            paths[path] = {"get": {**item["get"], "security": []}}
        else:
            paths[path] = {"get": {**item["get"], "responses": {**item["get"]["responses"], "401": refused}}}
    return {**document, "paths": paths,
            "security": [{scheme: []} for scheme in auth.schemes],
            "components": {**document["components"],
                           "securitySchemes": {scheme: schemes[scheme] for scheme in auth.schemes}}}


_STATUS_PAGE_DOC = {"get": {
    "summary": "The status page: verdict, reasons, probes, status timeline and charts (HTML, no script)",
    "responses": {"200": {"description": "the page", "headers": {"Cache-Control": {"schema": {"type": "string", "const": NO_STORE}}},
                          "content": {"text/html": {"schema": {"type": "string"}}}}},
}}


def make_app(
    settings: Settings,
    *,
    interval: float = DEFAULT_INTERVAL,
    prefix: str = DEFAULT_PREFIX,
    report_dir: Path | None = None,
    exporter_metrics: bool = False,
    auth: Credentials | None = None,
    protect_health: bool = False,
    runs: RunMode = RunMode(),
) -> Starlette:
    """A standalone ASGI app serving the verdict routes; its lifespan runs the probe loop.

    With ``auth`` every route needs one of its credentials (:mod:`celery_probe.serve.auth`)
    except the two health routes, which stay public for load balancers and Kubernetes
    unless ``protect_health``.

    Mounted into another app (``app.mount("/", make_app(settings))``) it still works: the
    loop then starts with the first request, because Starlette does not run the lifespan
    of mounted apps. :class:`ProbeMiddleware` ties it to the host's lifespan instead.
    """
    from celery_probe.serve.status_view import StatusPage

    service = ProbeService(settings, interval=interval, prefix=prefix, report_dir=report_dir,
                           exporter_metrics=exporter_metrics, runs=runs)
    if auth is not None:
        service.protect(health=protect_health)
    status_page = StatusPage(service.loop, interval=interval, report_dir=report_dir)
    openapi_paths = {**service.openapi, "paths": {**service.openapi["paths"], STATUS_PAGE_PATH: _STATUS_PAGE_DOC}}
    if auth is not None:
        openapi_paths = with_security(openapi_paths, auth, set() if protect_health else service.health_paths)
    document = json.dumps(openapi_paths).encode()

    async def openapi(_request: Request) -> Response:
        return Response(document, media_type=JSON)

    async def page(_request: Request) -> Response:
        service.ensure_started()
        return Response(await status_page.page(), media_type=HTML, headers={"Cache-Control": NO_STORE})

    # Only the standalone app describes itself and serves the page: in a host app, / and
    # /openapi.json are the host's.
    gate = [] if auth is None else [
        Middleware(AuthGate, credentials=auth, public=() if protect_health else service.health_paths)]
    app = Starlette(routes=[*service.routes(), Route(OPENAPI_PATH, openapi, methods=["GET"]),
                            Route(STATUS_PAGE_PATH, page, methods=["GET"])],
                    middleware=gate, lifespan=service.lifespan)
    app.state.status_page = status_page
    app.state.probe = service
    return app


class ProbeMiddleware:
    """Adds the verdict routes to any ASGI app and runs the probe loop for its lifetime.

    ``app.add_middleware(ProbeMiddleware, settings=settings)`` for Starlette and FastAPI, or
    ``app = ProbeMiddleware(app, settings=settings)`` for any ASGI app. The loop starts
    when the host's lifespan starts (or with the first request when the server runs
    without lifespan) and stops, killing a run in progress, when the host shuts down.
    Paths other than the verdict routes go to the host app unchanged. Without ``settings``
    the target comes from ``CELERY_PROBE_*`` variables and ``pyproject.toml``, as for the CLI.
    With ``auth`` (:func:`celery_probe.serve.credentials.load_credentials`) the verdict routes
    need a credential, the health routes only with ``protect_health``; the host's own
    routes are the host's business.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings | None = None,
        *,
        interval: float = DEFAULT_INTERVAL,
        prefix: str = DEFAULT_PREFIX,
        healthz_path: str | None = "/healthz",
        metrics_path: str | None = "/metrics",
        report_dir: Path | None = None,
        auth: Credentials | None = None,
        protect_health: bool = False,
    ) -> None:
        self.app = app
        self.auth = auth
        if settings is None:  # CELERY_PROBE_* variables and [tool.celery-probe], as for the CLI
            settings = resolve_settings(ignore=REMEDIATION)  # serve never remediates
        require_target(settings)
        self.service = ProbeService(settings, interval=interval, prefix=prefix, healthz_path=healthz_path,
                                    metrics_path=metrics_path, report_dir=report_dir)
        self.public = frozenset() if protect_health else self.service.health_paths
        if auth is not None:
            self.service.protect(health=protect_health)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._watch_lifespan(receive), send)
            return
        if scope["type"] == "http" and scope.get("method") in ("GET", "HEAD"):
            path = route_path(scope)
            handler = self.service.paths.get(path)
            if handler is not None:
                if self.auth is not None and path not in self.public \
                        and not self.auth.accepts(authorization_of(scope)):
                    await refuse(self.auth, send)
                    return
                self.service.ensure_started()
                await handler(Headers(scope=scope))(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _watch_lifespan(self, receive: Receive) -> Receive:
        async def wrapped() -> Any:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.service.ensure_started()
            elif message["type"] == "lifespan.shutdown":
                await self.service.shutdown()
            return message

        return wrapped
