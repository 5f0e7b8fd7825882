"""The ``celery-probe`` console script: ``worker-check`` without click, everything else through it.

``worker-check`` runs as a Kubernetes exec probe in every worker pod, every few seconds, so
it must start in milliseconds: importing click and the settings alone would cost more than
the whole check. Its arguments go straight to :mod:`celery_probe.worker.check_cli` (the
standard library only); ``worker-check --help`` and every other command go to
:func:`celery_probe.cli.main.main`.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # no typing, no collections at run time: every millisecond is the probe's
if TYPE_CHECKING:
    from collections.abc import Sequence

HELP = {"-h", "--help"}


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["worker-check"] and not HELP.intersection(args[1:]):
        from celery_probe.worker.check_cli import main as worker_check

        sys.exit(worker_check(args[1:]))
    from celery_probe.cli.main import main as full

    full(None if argv is None else args)
