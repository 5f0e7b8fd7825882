"""A Django project's app that leaves DJANGO_SETTINGS_MODULE to the environment.

Projects with several settings modules (``config.settings.production``…) often do: without
the variable, or with a typo in it, Django cannot configure Celery.
"""

from celery import Celery

app = Celery("envproj")
app.config_from_object("django.conf:settings", namespace="CELERY")
