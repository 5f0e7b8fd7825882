"""``celery-probe worker-check``: the click face of :mod:`celery_probe.worker.check_cli`.

:mod:`celery_probe.cli.entry` runs the check itself without click, for speed; this command
gives it ``--help``, a place in ``celery-probe --help`` and in docs/cli.md, and runs the same
code when reached through click (``cli.main.main([...])``).
"""

from __future__ import annotations

import click

from celery_probe.worker.check_cli import main as run_worker_check


@click.command("worker-check", context_settings={"ignore_unknown_options": True})
@click.argument("folder", metavar="DIR", required=False)
@click.option("--liveness", "kind", flag_value="liveness",
              help="Is the worker's main loop turning? Never depends on the broker.")
@click.option("--readiness", "kind", flag_value="readiness",
              help="Is the worker connected and consuming every queue it started with?")
@click.option("--max-age", metavar="S",
              help="Oldest evidence that still holds (seconds or 90s, 5m; default: 6 × the worker's "
                   "interval, 30s at the default 5s).")
@click.option("--max-busy", metavar="S",
              help="Solo pool: how long one task may hold the loop (default: --max-age).")
@click.pass_context
def worker_check(ctx: click.Context, folder: str | None, kind: str | None, max_age: str | None,
                 max_busy: str | None) -> int:
    """Judge the liveness or readiness file a worker keeps in DIR: no Celery, no broker.

    Imports neither Celery nor the app and never touches the broker. Exit 0: the evidence holds;
    1: the worker is stale, busy too long or not ready; 2: no usable evidence (missing, unreadable
    or corrupt file); 64: usage error or no such folder. One line says why.
    """
    argv = [arg for arg in (folder,) if arg is not None]
    argv += [f"--{kind}"] if kind else []
    argv += [f"--max-age={max_age}"] if max_age is not None else []
    argv += [f"--max-busy={max_busy}"] if max_busy is not None else []
    return run_worker_check(argv)
