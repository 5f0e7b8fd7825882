"""The ASGI app of ``serve --targets``: overall routes, and each target's own under ``/targets/NAME``.

===========================================  ================================================
route                                        answer
===========================================  ================================================
``PREFIX/health/celery``                     worst status, and each target's health document
``/healthz``                                 worst status; 503 when a target is ``down``
``PREFIX/metrics/ops-alerts``                every target's alerts, each naming its target
``/metrics``                                 every target's series, labelled ``target``
``/``                                        a section per target, linking to its own page
``/targets/NAME/healthz`` (and the health,   that target alone, exactly as a one-target
ops-alerts and ``/targets/NAME/`` pages)     serve answers
``/openapi.json``                            the description of the above
===========================================  ================================================

Like the one-target app, every answer is built from published snapshots; no request starts
a probe run, and none waits for one.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from celery_probe.present.exporter_compat import exporter_families, remember_workers
from celery_probe.present.metrics import (
    ServeLoopTotals,
    merge_families,
    metric_families,
    render_for,
)
from celery_probe.run.runner import ProbeRunner, RunMode
from celery_probe.serve.app import (
    _STATUS_PAGE_DOC,
    HEALTH_PATH,
    HTML,
    JSON,
    METRICS_CONTENT,
    NO_STORE,
    OPENAPI_PATH,
    OPS_ALERTS_PATH,
    STATUS_PAGE_PATH,
    ProbeService,
    openapi_wrapper,
    with_security,
)
from celery_probe.serve.auth import AuthGate, Credentials
from celery_probe.serve.fleet import Fleet, TargetSpec
from celery_probe.verdict.mapper import overall_status
from celery_probe.verdict.model import (
    FleetHealthDocument,
    FleetHealthzDocument,
    FleetOpsAlertsDocument,
    HealthDocument,
    HealthzDocument,
    OpsAlertsDocument,
    Status,
    json_schema,
)

TARGETS_PATH = "/targets"


class FleetService:
    """The targets' services and the overall handlers that combine their latest verdicts."""

    def __init__(self, specs: Mapping[str, TargetSpec], *, prefix: str, report_dir: Path | None,
                 reload_from: Callable[[], Mapping[str, TargetSpec]] | None = None,
                 exporter_metrics: bool = False, protected: bool = False, protect_health: bool = False,
                 runs: RunMode = RunMode()) -> None:
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.protected, self.protect_health = protected, protect_health  # behind a credential: private caching
        self.report_dir = report_dir
        self.exporter_metrics = exporter_metrics
        # One resident server for every target: each run still gets its own fork, settings,
        # environment and hard timeout, and a target's hang holds only its own run.
        self.runner = ProbeRunner(sys.executable, mode=runs)
        self.fleet = Fleet(specs, self._service, reload_from=reload_from)
        self._workers: dict[str, dict[str, float]] = {}  # target -> worker -> last answered (exporter metrics)
        self._pages: dict[str, Any] = {}  # target -> its StatusPage
        self._reloads: set[Any] = set()  # SIGHUP reloads in progress (asyncio keeps only weak references)

    def _service(self, spec: TargetSpec) -> ProbeService:
        folder = None
        if self.report_dir is not None:
            folder = self.report_dir / spec.name
            folder.mkdir(parents=True, exist_ok=True)
        service = ProbeService(spec.settings, interval=spec.interval, prefix=self.prefix, report_dir=folder,
                               runner=self.runner)
        if self.protected:
            service.protect(health=self.protect_health)
        return service

    @property
    def services(self) -> dict[str, ProbeService]:
        return self.fleet.services

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        import asyncio

        loop = asyncio.get_running_loop()
        self.runner.start()
        self.fleet.start()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on the main thread: no SIGHUP
            loop.add_signal_handler(signal.SIGHUP, self._reload_soon, loop)
        try:
            yield
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGHUP)
            await self.fleet.stop()
            await self.runner.close()

    def _reload_soon(self, loop: Any) -> None:
        """SIGHUP: reload in a task the service keeps, so the event loop cannot drop it half done."""
        task = loop.create_task(self.fleet.reload(), name="celery-probe targets reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    # ------------------------------------------------------------------ overall answers

    def health(self) -> Response:
        """Each target's health document, as its own route serves it, under the worst status."""
        parts: list[bytes] = []
        statuses: list[Status] = []
        caches: list[str] = []
        for name, service in self.services.items():
            published, age, cache = service.served(private=service.private_health)
            statuses.append(published.snapshot.verdict.get("status") or "unknown")
            caches.append(cache)
            age_text = b"null" if age is None else f"{age:.3f}".encode()
            parts.append(json.dumps(name).encode() + b': {"age_s": ' + age_text + b", " + published.health_tail)
        head = json.dumps({"status": overall_status(statuses)})[:-1].encode()
        body = head + b', "targets": {' + b", ".join(parts) + b"}}"
        return Response(body, media_type=JSON, headers={"Cache-Control": _shortest(caches)})

    def healthz(self) -> Response:
        """The worst status, 503 when it is ``down``; each target's status, age and time."""
        targets = {name: service.healthz_document() for name, service in self.services.items()}
        status = overall_status([t["status"] for t in targets.values()])
        document: FleetHealthzDocument = {"status": status, "targets": targets}
        return Response(json.dumps(document).encode(), status_code=503 if status == "down" else 200,
                        media_type=JSON, headers={"Cache-Control": NO_STORE, "X-Celery-Probe-Status": status})

    def ops_alerts(self) -> Response:
        alerts: list[dict[str, Any]] = []
        health: dict[str, Any] = {}
        for name, service in self.services.items():
            published, _age, _cache = service.served()
            document = json.loads(published.alerts)
            alerts.extend({**alert, "target": name} for alert in document.get("alerts") or [])
            health[name] = document.get("celery_health")
        body: FleetOpsAlertsDocument = {"alerts": alerts, "celery_health": health}  # type: ignore[typeddict-item]
        return Response(json.dumps(body, default=str).encode(), media_type=JSON, headers={"Cache-Control": NO_STORE})

    def metrics(self, accept: str | None = None) -> Response:
        """Every target's series, each with its ``target`` label, in one valid exposition.

        OpenMetrics when ``accept`` asks for it, else the 0.0.4 text format, as for one target.
        """
        now = time.time()
        groups = []
        for name, service in self.services.items():
            loop, snapshot = service.loop, service.loop.snapshot
            groups.append(metric_families(
                snapshot.verdict, snapshot.report, produced_at=loop.last_run, last_success=loop.last_success,
                now=now if loop.last_run is not None else None,
                counters=ServeLoopTotals(loop.runs_started, loop.runs_killed), labels={"target": name},
            ))
            if self.exporter_metrics:
                memory = self._workers.get(name, {})
                if snapshot.produced_at is not None:
                    memory = self._workers[name] = remember_workers(memory, snapshot.verdict, snapshot.produced_at)
                groups.append(exporter_families(snapshot.verdict, remembered=memory, labels={"target": name}))
        self._workers = {name: seen for name, seen in self._workers.items() if name in self.services}
        body, content_type = render_for(merge_families(groups), accept)
        return Response(body, headers={"Content-Type": content_type, "Cache-Control": NO_STORE})

    def overview(self) -> bytes:
        """The page at ``/``: one section per target, with its status, age, reasons and links."""
        rows = []
        statuses: list[Status] = []
        for name, service in self.services.items():
            published, age, _cache = service.served()
            verdict = published.snapshot.verdict
            status = str(verdict.get("status") or "unknown")
            statuses.append(status)  # type: ignore[arg-type]
            reasons = [r for r in verdict.get("reasons") or [] if r.get("severity") != "info"]
            why = "".join(f"<li><code>{html.escape(str(r.get('code')))}</code> {html.escape(str(r.get('message')))}</li>"
                          for r in reasons[:5]) or "<li>no reason to worry</li>"
            link = html.escape(f"{TARGETS_PATH}/{name}/", quote=True)
            shown_age = "no run yet" if age is None else f"{age:.0f}s ago"
            rows.append(
                f'<section class="target {html.escape(status)}" id="target-{html.escape(name, quote=True)}">'
                f'<h2><a href="{link}">{html.escape(name)}</a>: <span class="status">{html.escape(status)}</span></h2>'
                f"<p>checked {html.escape(shown_age)}, a run every {service.interval:g}s</p><ul>{why}</ul></section>"
            )
        overall = overall_status(statuses)
        page = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta http-equiv="refresh" content="15">'
            f"<title>Celery: {html.escape(overall)} ({len(rows)} targets)</title>"
            "<style>body{font-family:sans-serif;margin:2em}section{border-left:.5em solid #888;padding:.2em 1em;"
            "margin:1em 0}.healthy{border-color:#2a2}.degraded{border-color:#e90}.down{border-color:#d22}"
            ".unknown{border-color:#85a}</style></head><body>"
            f'<h1>Celery: <span class="status">{html.escape(overall)}</span></h1>{"".join(rows)}</body></html>'
        )
        return page.encode("utf-8")

    async def target_page(self, name: str) -> bytes | None:
        """The target's own status page (the one-target page), cached per loop as serve caches it."""
        from celery_probe.serve.status_view import StatusPage

        service = self.services.get(name)
        if service is None:
            return None
        page = self._pages.get(name)
        if page is None or page.loop is not service.loop:  # new, or restarted by a reload
            self._pages = {n: p for n, p in self._pages.items() if n in self.services}
            page = self._pages[name] = StatusPage(service.loop, interval=service.interval,
                                                  report_dir=service.loop.report_dir)
        return await page.page()

    def openapi(self) -> dict[str, Any]:
        return fleet_openapi(self.prefix)


def _shortest(caches: list[str]) -> str:
    """The Cache-Control of several answers in one: no-store if any is, else the smallest max-age
    (private if any is private)."""
    ages = []
    scope = "public"
    for cache in caches:
        if not cache.startswith(("public, max-age=", "private, max-age=")):
            return NO_STORE
        if cache.startswith("private"):
            scope = "private"
        ages.append(int(cache.rsplit("=", 1)[1]))
    return f"{scope}, max-age={min(ages)}" if ages else NO_STORE


def make_fleet_app(specs: Mapping[str, TargetSpec], *, prefix: str, report_dir: Path | None,
                   reload_from: Callable[[], Mapping[str, TargetSpec]] | None = None,
                   exporter_metrics: bool = False, auth: Credentials | None = None,
                   protect_health: bool = False, runs: RunMode = RunMode()) -> Starlette:
    """The Starlette app of ``serve --targets``; its lifespan runs every target's loop.

    With ``auth`` every route needs a credential except the health routes, overall and per
    target, which stay public unless ``protect_health`` (as for one target).
    """
    service = FleetService(specs, prefix=prefix, report_dir=report_dir, reload_from=reload_from,
                           exporter_metrics=exporter_metrics, protected=auth is not None,
                           protect_health=protect_health, runs=runs)
    p = service.prefix
    each = TARGETS_PATH + "/{name}"
    openapi_document = service.openapi()
    if auth is not None:
        openapi_document = with_security(openapi_document, auth, () if protect_health else {
            p + HEALTH_PATH, "/healthz", each + p + HEALTH_PATH, each + "/healthz"})
    document = json.dumps(openapi_document).encode()

    def plain(handler: Callable[[], Response]) -> Callable[[Request], Any]:
        async def call(_request: Request) -> Response:
            return handler()
        return call

    def one(method: str) -> Callable[[Request], Any]:
        async def call(request: Request) -> Response:
            target = service.services.get(request.path_params["name"])
            if target is None:
                return _no_such_target(request.path_params["name"])
            return getattr(target, method)()
        return call

    async def page(_request: Request) -> Response:
        return Response(service.overview(), media_type=HTML, headers={"Cache-Control": NO_STORE})

    async def target_page(request: Request) -> Response:
        body = await service.target_page(request.path_params["name"])
        if body is None:
            return _no_such_target(request.path_params["name"])
        return Response(body, media_type=HTML, headers={"Cache-Control": NO_STORE})

    async def openapi(_request: Request) -> Response:
        return Response(document, media_type=JSON)

    async def metrics(request: Request) -> Response:
        return service.metrics(request.headers.get("accept"))

    gate = [] if auth is None else [Middleware(AuthGate, credentials=auth,
                                               public=() if protect_health else _health_route(p))]
    app = Starlette(routes=[
        Route(p + HEALTH_PATH, plain(service.health), methods=["GET"]),
        Route("/healthz", plain(service.healthz), methods=["GET"]),
        Route(p + OPS_ALERTS_PATH, plain(service.ops_alerts), methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route(STATUS_PAGE_PATH, page, methods=["GET"]),
        Route(OPENAPI_PATH, openapi, methods=["GET"]),
        Route(each + p + HEALTH_PATH, one("health"), methods=["GET"]),
        Route(each + "/healthz", one("healthz"), methods=["GET"]),
        Route(each + p + OPS_ALERTS_PATH, one("ops_alerts"), methods=["GET"]),
        Route(each + "/", target_page, methods=["GET"]),
    ], middleware=gate, lifespan=service.lifespan)
    app.state.fleet = service
    return app


def _health_route(prefix: str) -> Callable[[str], bool]:
    """Whether a path is a health route, overall or of a target (public unless --protect-health)."""
    health = re.compile(rf"(?:{re.escape(TARGETS_PATH)}/[^/]+)?(?:/healthz|{re.escape(prefix + HEALTH_PATH)})")
    return lambda path: health.fullmatch(path) is not None


def _no_such_target(name: str) -> Response:
    return Response(json.dumps({"error": f"no target named {name!r}"}).encode(), status_code=404, media_type=JSON)


def fleet_openapi(prefix: str) -> dict[str, Any]:
    """The OpenAPI 3.1 description of :func:`make_fleet_app`'s routes, generated from the model."""

    schemas: dict[str, Any] = {}
    no_store = {"Cache-Control": {"schema": {"type": "string", "const": NO_STORE}}}
    cached = {"Cache-Control": {"description": "public, max-age=N (seconds until the next verdict; private behind "
                                               "a credential), or no-store",
                                "schema": {"type": "string", "pattern": r"^(no-store|(public|private), max-age=\d+)$"}}}
    status_header = {**no_store, "X-Celery-Probe-Status": {"schema": json_schema(Status)}}
    name = [{"name": "name", "in": "path", "required": True, "description": "a target of the targets file",
             "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$"}}]
    missing = {"description": "no target of that name", "content": {JSON: {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"],
        "additionalProperties": False}}}}

    def answer(description: str, schema: Any, headers: dict[str, Any]) -> dict[str, Any]:
        return {"description": description, "headers": headers, "content": {JSON: {"schema": json_schema(schema, schemas)}}}

    def get(summary: str, responses: dict[str, Any], *, per_target: bool = False) -> dict[str, Any]:
        operation: dict[str, Any] = {"summary": summary, "responses": responses}
        if per_target:
            operation["parameters"] = name
            operation["responses"] = {**responses, "404": missing}
        return {"get": operation}

    each = TARGETS_PATH + "/{name}"
    healthz = {"200": answer("healthy, degraded or unknown", HealthzDocument, status_header),
               "503": answer("down", HealthzDocument, status_header)}
    paths = {
        prefix + HEALTH_PATH: get("Every target's latest verdict, under the worst status", {
            "200": answer("the verdicts, whatever their status", FleetHealthDocument, cached)}),
        "/healthz": get("Worst status for load balancers: 503 when a target is down", {
            "200": answer("no target down", FleetHealthzDocument, status_header),
            "503": answer("a target is down", FleetHealthzDocument, status_header)}),
        prefix + OPS_ALERTS_PATH: get("Every target's alerts", {
            "200": answer("alerts naming their target, and each target's health", FleetOpsAlertsDocument, no_store)}),
        "/metrics": get("Every target's metrics, labelled target: OpenMetrics when Accept asks for it, else Prometheus text", {
            "200": {"description": "metrics", "headers": no_store, "content": METRICS_CONTENT}}),
        STATUS_PAGE_PATH: {"get": {**_STATUS_PAGE_DOC["get"], "summary": "A section per target (HTML, no script)"}},
        each + prefix + HEALTH_PATH: get("The target's latest verdict", {
            "200": answer("the verdict, whatever its status", HealthDocument, cached)}, per_target=True),
        each + "/healthz": get("The target's status for load balancers", healthz, per_target=True),
        each + prefix + OPS_ALERTS_PATH: get("The target's ops-alerts document", {
            "200": answer("alerts and the six keys of get_celery_health()", OpsAlertsDocument, cached)}, per_target=True),
        each + "/": {"get": {**_STATUS_PAGE_DOC["get"], "parameters": name,
                             "responses": {**_STATUS_PAGE_DOC["get"]["responses"], "404": missing}}},
    }
    return openapi_wrapper(paths, schemas, "The latest Celery health verdict of each target; "
                                           "requests never start a probe run.")
