"""An app whose own imports fail: a dependency that is not installed where the probe runs."""

import celery_probe_dependency_not_installed  # noqa: F401
from celery import Celery

app = Celery("broken_import_app")
