"""``get_celery_health()``: the classic Python entry point, safe to call from a web process.

The probes arm ``SIGALRM``, which only works on a main thread and would disturb a host
application, so the probe run happens in a child process (``celery-probe run``) with a
hard timeout. Broker URLs travel in the child's environment, never on its command line
where ``ps`` would show their passwords.

:func:`child_command` and :func:`setting_variables` are the one description of such a probe
process, used here and by ``serve``'s loop (:mod:`celery_probe.serve.loop`): each setting
travels as its ``CELERY_PROBE_*`` variable, generic over
:data:`celery_probe.config.settings.SPECS`, so a new setting travels too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from celery_probe.config.settings import ENV_PREFIX, REMEDIATION, SPECS, Settings, resolve_settings
from celery_probe.errors import ProbeUsageError
from celery_probe.verdict.mapper import seed_shape, unknown_verdict
from celery_probe.verdict.model import SeedShape, Verdict

if TYPE_CHECKING:
    from celery import Celery

PROCESS_SLACK = 3.0  # seconds beyond the deadline for interpreter start-up and the watchdog
ARGV_SETTINGS = ("report_dir", "format")  # given on the child's command line instead
# Never passed: only `celery-probe run` remediates; the child runs with --no-on-down.
NOT_PASSED = (*ARGV_SETTINGS, *REMEDIATION)


def child_arguments(folder: Path) -> list[str]:
    """The arguments of ``python -m celery_probe`` for a probe run: JSON out, reports in
    ``folder``, never remediation (the same for a fresh process and a resident run)."""
    return ["run", "--format", "json", "--no-on-down", "--report-dir", str(folder)]


def child_command(python: str, folder: Path) -> list[str]:
    """The probe run in a child process (see :func:`child_arguments`)."""
    return [python, "-m", "celery_probe", *child_arguments(folder)]


def setting_variables(values: Mapping[str, Any]) -> dict[str, str]:
    """The ``CELERY_PROBE_*`` variables that carry ``values`` (setting name to value) to a child.

    Each is spelled as its setting's parser reads it back; unset values (None, empty) and
    the settings of :data:`NOT_PASSED` are left out.
    """
    variables = {}
    for spec in SPECS:
        text = None if spec.name in NOT_PASSED else _env_text(values.get(spec.name))
        if text:
            variables[spec.variable] = text
    return variables


def _env_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join("=".join(map(str, item)) if isinstance(item, tuple) else str(item) for item in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def child_environment(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a probe run that reproduces ``settings`` exactly.

    Every resolved setting is passed as its ``CELERY_PROBE_*`` variable, which outranks the
    ``pyproject.toml`` the child would read, and inherited ``CELERY_PROBE_*`` variables are
    dropped so the child cannot resolve anything differently from this process;
    :func:`check_round_trip` proves it does not.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith(ENV_PREFIX)}
    values: dict[str, Any] = {spec.name: getattr(settings, spec.name) for spec in SPECS}
    # One setting, two fields: the default threshold and the QUEUE=N ones.
    values["queue_threshold"] = (settings.queue_threshold, *settings.queue_thresholds.items())
    env.update(setting_variables(values))
    return env


def check_round_trip(settings: Settings, environ: Mapping[str, str] | None = None) -> None:
    """Refuse to start when a setting would reach the probe process changed (one line, exit 64)."""
    env = child_environment(settings, environ)
    env.pop("CELERY_BROKER_URL", None)  # Celery's own fallback: the app reads it in the child too
    again = resolve_settings(environ=env, pyproject=False)
    for spec in SPECS:
        names = ("queue_threshold", "queue_thresholds") if spec.name == "queue_threshold" else (spec.name,)
        for name in names:
            if name not in NOT_PASSED and getattr(again, name) != getattr(settings, name):
                raise ProbeUsageError(
                    f"setting {name.replace('_', '-')} cannot be passed to the probe process unchanged "
                    f"({getattr(settings, name)!r} would arrive as {getattr(again, name)!r})"
                )


def get_celery_health(
    timeout: float = 5,
    *,
    app: str | Celery | None = None,
    broker: str | None = None,
    backend: str | None = None,
    queues: Sequence[str] = (),
    expect_workers: int | None = None,
) -> dict[str, Any]:
    """Probe Celery and return ``worker_alive``, ``active_tasks``, ``scheduled_tasks``,
    ``queue_length``, ``last_heartbeat`` (a datetime or None) and ``status``.

    Unset targets fall back to ``CELERY_PROBE_*`` variables and ``pyproject.toml``, as for
    the CLI. A Celery app object is probed through its broker and backend URLs.
    """
    return _with_datetime(seed_shape(probe_verdict(
        timeout, app=app, broker=broker, backend=backend, queues=queues, expect_workers=expect_workers
    )))


# How get_celery_health's arguments are named in an error (its timeout is the run's deadline).
_API_LABELS = {"deadline": "timeout=", "queues": "queues=", "expect_workers": "expect_workers=",
               "app": "app=", "broker": "broker=", "backend": "backend="}


def probe_verdict(
    timeout: float = 5,
    *,
    app: str | Celery | None = None,
    broker: str | None = None,
    backend: str | None = None,
    queues: Sequence[str] = (),
    expect_workers: int | None = None,
) -> Verdict:
    """The full verdict dict of one probe run in a child process.

    Only the settings given here are passed; the child resolves the others from the
    inherited environment and ``pyproject.toml``, as the CLI would.
    """
    values: dict[str, Any] = {"deadline": timeout, "queues": tuple(queues), "expect_workers": expect_workers or None}
    if app is not None and not isinstance(app, str):
        broker = broker or app.conf.broker_url
        configured = app.conf.result_backend
        backend = backend or (configured if isinstance(configured, str) else None)
        values["queues"] = values["queues"] or tuple(
            [q.name for q in (app.conf.task_queues or [])] or [app.conf.task_default_queue])
    else:
        values["app"] = app or None
    values.update(broker=broker or None, backend=backend or None)
    try:  # a bad argument is named as the caller wrote it, not as the child's variable
        resolve_settings(values, environ={}, pyproject=False, cli_labels=_API_LABELS)
    except ProbeUsageError as error:
        return unknown_verdict(str(error))
    env = {**os.environ, **setting_variables(values)}
    with tempfile.TemporaryDirectory(prefix="celery-probe-") as folder:
        try:
            proc = subprocess.run(
                child_command(sys.executable, Path(folder)), env=env, capture_output=True,
                text=True, timeout=timeout + PROCESS_SLACK, stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return unknown_verdict(f"the probe process did not finish within {timeout + PROCESS_SLACK:g}s")
    try:
        verdict = json.loads(proc.stdout)
    except ValueError:
        message = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return unknown_verdict(f"the probe process failed (exit {proc.returncode}): {message}")
    if not isinstance(verdict, dict):
        return unknown_verdict("the probe process printed no verdict")
    return cast(Verdict, verdict)  # what the child's mapper printed


def _with_datetime(seed: SeedShape) -> dict[str, Any]:
    shape: dict[str, Any] = dict(seed)
    beat = shape.get("last_heartbeat")
    if isinstance(beat, str):
        try:
            shape["last_heartbeat"] = datetime.fromisoformat(beat)
        except ValueError:
            shape["last_heartbeat"] = None
    return shape
