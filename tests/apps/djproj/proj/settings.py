"""Django settings read from the environment, as cookiecutter-django's are (django-environ style).

A variable the settings need and do not find raises ImproperlyConfigured: under cron's bare
environment (``env -i PATH=...``) DATABASE_URL is missing, and so is everything else.
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str) -> str:
    try:
        return os.environ[name]
    except KeyError:
        raise ImproperlyConfigured(f"Set the {name} environment variable") from None


def sqlite_path(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise ImproperlyConfigured(f"DATABASE_URL must be sqlite:///PATH in this project, not {url!r}")
    return url[len("sqlite:///"):]


SECRET_KEY = "test-project-key-not-a-secret"
DEBUG = False
ALLOWED_HOSTS: list[str] = []
INSTALLED_APPS = ["django.contrib.contenttypes", "proj"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": sqlite_path(env("DATABASE_URL"))}}
USE_TZ = True

CELERY_BROKER_URL = env("CELERY_BROKER_URL")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", CELERY_BROKER_URL)
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("PROBE_TEST_DEFAULT_QUEUE", "celery")
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
