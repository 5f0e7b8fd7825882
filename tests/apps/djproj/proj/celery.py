"""The project's Celery app, set up as Celery's "First steps with Django" guide does."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")
# Every CELERY_-prefixed Django setting configures Celery. Read lazily: a settings error is
# raised at the first read of app.conf, not when this module is imported.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
