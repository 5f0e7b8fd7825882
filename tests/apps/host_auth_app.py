"""A host Starlette app adding celery-probe's routes behind a bearer token (docs/serve-auth.md)."""

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from celery_probe.serve import ProbeMiddleware
from celery_probe.serve.credentials import load_credentials


async def home(request):
    return PlainTextResponse("the host app")


app = Starlette(routes=[Route("/", home)])
app.add_middleware(ProbeMiddleware, interval=30, auth=load_credentials(token_env="HOST_PROBE_TOKEN"))
