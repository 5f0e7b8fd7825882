"""The reload logic of serve --targets: which targets start, stop, restart or keep running."""

from __future__ import annotations

import asyncio
from pathlib import Path

from celery_probe.config.settings import resolve_settings
from celery_probe.errors import ProbeUsageError
from celery_probe.serve.fleet import Fleet, TargetSpec, load_serve_targets


class Recorder:
    """A target's service as the fleet sees it: started, then shut down."""

    made: list[str] = []

    def __init__(self, spec: TargetSpec) -> None:
        self.spec = spec
        self.started = 0
        self.stopped = 0
        Recorder.made.append(spec.name)

    def ensure_started(self) -> None:
        self.started += 1

    async def shutdown(self) -> None:
        self.stopped += 1


def spec(name: str, broker: str = "redis://127.0.0.1:1/0", interval: float = 15.0) -> TargetSpec:
    settings = resolve_settings({"broker": broker}, environ={}, pyproject=False)
    return TargetSpec(name, settings, interval)


def test_reload_starts_new_stops_removed_restarts_changed_and_keeps_the_rest() -> None:
    async def scenario() -> None:
        Recorder.made = []
        fleet = Fleet({"a": spec("a"), "b": spec("b"), "c": spec("c")}, Recorder)
        fleet.start()
        a, b, c = (fleet.services[n] for n in "abc")
        await fleet.apply({"a": spec("a"), "c": spec("c", interval=30.0), "d": spec("d")})
        assert list(fleet.services) == ["a", "c", "d"]
        assert fleet.services["a"] is a and a.stopped == 0  # unchanged: same service, still running
        assert b.stopped == 1  # removed
        assert c.stopped == 1 and fleet.services["c"] is not c and fleet.services["c"].started == 1  # changed
        assert fleet.services["d"].started == 1
        assert Recorder.made == ["a", "b", "c", "c", "d"]
        await fleet.stop()
        assert all(s.stopped == 1 for s in fleet.services.values())

    asyncio.run(scenario())


def test_a_target_file_that_no_longer_reads_keeps_the_running_set() -> None:
    def broken() -> dict[str, TargetSpec]:
        raise ProbeUsageError("invalid deadline 'soon' ([targets.x] in t.toml)")

    async def scenario() -> None:
        fleet = Fleet({"a": spec("a")}, Recorder, reload_from=broken)
        fleet.start()
        before = dict(fleet.services)
        assert await fleet.reload() is False
        assert fleet.services == before and fleet.services["a"].stopped == 0

    asyncio.run(scenario())


def test_intervals_come_from_the_table_then_defaults_then_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("[defaults]\ninterval = '30s'\n"
                    "[targets.a]\nbroker = 'redis://127.0.0.1:1/0'\ninterval = 5\n"
                    "[targets.b]\nbroker = 'redis://127.0.0.1:1/0'\n")
    specs = load_serve_targets(path, {}, default_interval=15.0)
    assert {n: s.interval for n, s in specs.items()} == {"a": 5.0, "b": 30.0}
    path.write_text("[targets.a]\nbroker = 'redis://127.0.0.1:1/0'\n")
    assert load_serve_targets(path, {}, default_interval=15.0)["a"].interval == 15.0


def test_run_targets_reads_the_same_file_and_ignores_serve_s_interval(tmp_path: Path) -> None:
    from celery_probe.config.targets import load_targets

    path = tmp_path / "t.toml"
    path.write_text("[defaults]\ninterval = 9\n[targets.a]\nbroker = 'redis://127.0.0.1:1/0'\ninterval = 5\n")
    assert list(load_targets(path, {})) == ["a"]
