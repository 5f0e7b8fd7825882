"""Several deployments behind one ``serve``: one probe loop per target of a targets file.

``celery-probe serve --targets FILE`` reads the same file as ``run --targets``. Each
``[targets.NAME]`` gets its own :class:`~celery_probe.serve.app.ProbeService`: its own
settings, interval (the table's ``interval``, else ``[defaults]``, else ``--interval``),
deadline, history (``REPORT_DIR/NAME`` with ``--report-dir``) and routes. The loops are
independent asyncio tasks whose runs are child processes, so a target that hangs, or whose
broker is frozen, only holds up its own loop: another target's runs start on time and every
HTTP answer is built from snapshots already published.

On SIGHUP the file is read again: new targets start, removed ones stop (a run in progress
is killed), changed ones restart with their new settings, unchanged ones keep running
without losing their latest verdict. A file that no longer reads keeps the running set and
says why in the log, so a typo in an edit never blinds the prober.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery_probe.config.durations import parse_interval
from celery_probe.config.settings import Settings
from celery_probe.config.targets import SERVE_KEYS, load_target_tables
from celery_probe.errors import ProbeUsageError

log = logging.getLogger("celery_probe.serve")

@dataclass(frozen=True)
class TargetSpec:
    """What one target of ``serve --targets`` is: its name, probe settings and interval."""

    name: str
    settings: Settings
    interval: float


def load_serve_targets(path: Path, cli: Mapping[str, Any] | None, *, default_interval: float) -> dict[str, TargetSpec]:
    """The targets of ``path`` for serve; a bad file or value is one :class:`ProbeUsageError`."""
    specs: dict[str, TargetSpec] = {}
    for name, (settings, extra) in load_target_tables(path, cli, extra_keys=SERVE_KEYS).items():
        interval = default_interval
        if "interval" in extra:
            raw, where = extra["interval"]
            interval = parse_interval(raw, where)
        specs[name] = TargetSpec(name, settings, interval)
    return specs


class Fleet:
    """The running targets by name, and the SIGHUP reload that changes them.

    ``make_service`` builds the service of one target (the app module passes
    :class:`~celery_probe.serve.app.ProbeService` with its prefix and report folder), so
    this module does not import Starlette.
    """

    def __init__(self, specs: Mapping[str, TargetSpec], make_service: Callable[[TargetSpec], Any], *,
                 reload_from: Callable[[], Mapping[str, TargetSpec]] | None = None) -> None:
        self.specs = dict(specs)
        self.make_service = make_service
        self.reload_from = reload_from
        self.services: dict[str, Any] = {name: make_service(spec) for name, spec in self.specs.items()}
        self.reloads = 0
        self._started = False
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._started = True
        for service in self.services.values():
            service.ensure_started()

    async def stop(self) -> None:
        self._started = False
        await asyncio.gather(*(service.shutdown() for service in self.services.values()),
                             return_exceptions=True)

    async def reload(self) -> bool:
        """Read the targets again and apply the difference; False (and a log line) if it did not read."""
        if self.reload_from is None:
            return False
        try:
            specs = await asyncio.to_thread(self.reload_from)
        except ProbeUsageError as exc:
            log.error("celery-probe: SIGHUP: keeping the %d running targets: %s", len(self.specs), exc)
            return False
        except Exception as exc:  # noqa: BLE001 - a reload that fails must keep serving, and say why in one line
            log.error("celery-probe: SIGHUP: keeping the %d running targets: %s: %s", len(self.specs),
                      type(exc).__name__, exc)
            return False
        await self.apply(specs)
        return True

    async def apply(self, specs: Mapping[str, TargetSpec]) -> None:
        """Start, stop and restart targets so that the running set is ``specs``."""
        async with self._lock:
            gone = [name for name in self.services if name not in specs]
            changed = [name for name, spec in specs.items() if name in self.specs and spec != self.specs[name]]
            added = [name for name in specs if name not in self.services]
            old = [self.services[name] for name in (*gone, *changed)]
            services = {name: service for name, service in self.services.items() if name not in (*gone, *changed)}
            for name in (*changed, *added):
                services[name] = self.make_service(specs[name])
            self.services, self.specs = {name: services[name] for name in specs}, dict(specs)
            self.reloads += 1
            await asyncio.gather(*(service.shutdown() for service in old), return_exceptions=True)
            if self._started:
                for name in (*changed, *added):
                    self.services[name].ensure_started()
            log.warning("celery-probe: targets reloaded: %d running (added %s, removed %s, changed %s)",
                        len(self.services), _names(added), _names(gone), _names(changed))


def _names(names: list[str]) -> str:
    return ", ".join(names) if names else "none"
