"""An operator's own probe: every worker that answers ping has registered a given task.

Run it with the built-in probes:

    PROBE_REQUIRED_TASK=myapp.sync_chats celery-probe run -A proj --probes docs/examples/test_task_registered.py

(``registered()`` lists an app's own tasks, not Celery's built-in ``celery.*`` ones.)

It uses the same fixtures and marker as the built-in probes, so it shares their deadline,
fails at once when no worker answered, and lands in the verdict under its own code.
"""

import os

import pytest

TASK = os.environ.get("PROBE_REQUIRED_TASK", "myapp.sync_chats")


@pytest.mark.probe(severity="degraded", code="myapp_task_not_registered")
def test_required_task_registered(probe_run, celery_app, probe_deadline, record, known):
    """Every worker that answers ping knows the task the product depends on."""
    with known:  # no worker answered: fail now with that reason, do not wait
        workers = probe_run.require_workers()
    inspect = celery_app.control.inspect(
        destination=workers, limit=len(workers), timeout=probe_deadline.within(1.0)
    )
    registered = inspect.registered() or {}
    record["registered"] = {name: TASK in registered.get(name, []) for name in workers}
    missing = [name for name in workers if TASK not in registered.get(name, [])]
    assert not missing, f"{TASK} is not registered on {', '.join(missing)}"
