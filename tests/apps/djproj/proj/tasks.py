"""A task of the project, found by app.autodiscover_tasks()."""

from celery import shared_task


@shared_task
def add(x: int, y: int) -> int:
    return x + y
