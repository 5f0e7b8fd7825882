"""An existing Starlette app that adds celery-probe's routes with one line (the README's example)."""

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from celery_probe.serve import ProbeMiddleware


async def home(request):
    return PlainTextResponse("the host app")


async def host_only(request):
    return PlainTextResponse("host route")


app = Starlette(routes=[Route("/", home), Route("/host/only", host_only)])
app.add_middleware(ProbeMiddleware, interval=1)  # target from CELERY_PROBE_* / pyproject.toml
