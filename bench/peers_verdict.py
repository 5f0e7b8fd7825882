"""Sections 1 and 2 of bench_peers.py: the healthy verdict, and the time to verdict after a fault.

Both run against one shared deployment (a private redis-server, one solo worker sending
heartbeats, and Flower watching them), so every tool measures the same broker and worker.
The timed commands come from bench_run.py (``commands``, ``run_once``) and so do the faults
(``DOWN_CASES``: worker SIGKILL, broker SIGSTOP, broker stopped).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench_run import (
    APP,
    BENCH_DIR,
    CAP,
    CONNECT_FLOOR,
    DEADLINE,
    DOWN_CASES,
    FLOOR,
    PEER,
    PROBE,
    TARGETS,
    WORKER_NAME,
    WORKER_START_TIMEOUT,
    Deployment,
    Row,
    Run,
    child_env,
    commands,
    run_once,
)
from flower_peer import Flower, HeartbeatWorker, Watch
from peers_report import Section, ratio, row_cells

from celery_probe.testing import GaveUp

FLOWER_CHECK = "Flower /api/workers?status=true + /api/queues/length"
FLOWER_WATCH = "Flower: fault -> status says not alive"
Tool = tuple[str, Callable[[], Run]]


class PeerDeployment(Deployment):
    """bench_run's deployment with a worker that sends heartbeats, so Flower can see it."""

    def start_worker(self) -> None:
        self.stop_worker()
        self.worker = HeartbeatWorker(APP, name=WORKER_NAME, env=self.app_env, pythonpath=[BENCH_DIR])
        self.worker.start(timeout=WORKER_START_TIMEOUT)


@dataclass
class Shared:
    """The shared deployment and what every timed command needs."""

    deployment: PeerDeployment
    flower: Flower
    env: dict[str, str]
    workdir: Path
    tools: dict[str, str]

    @property
    def worker(self) -> str:
        return WORKER_NAME.replace("%h", socket.gethostname())

    def cli(self, command: object) -> Callable[[], Run]:
        return lambda: run_once(command, self.env, self.workdir)  # type: ignore[arg-type]


@contextmanager
def shared_deployment(workdir: Path, tools: dict[str, str]) -> Iterator[Shared]:
    """Start redis-server, the worker, then Flower (it inspects the workers when it starts)."""
    deployment = PeerDeployment()
    flower: Flower | None = None
    try:
        deployment.start()
        env = child_env(deployment.app_env)
        flower = Flower(APP, env, workdir).start()
        shared = Shared(deployment, flower, env, workdir, tools)
        flower.wait_warm([shared.worker])
        yield shared
    finally:
        try:
            if flower is not None:
                flower.close()
        finally:
            deployment.close()


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def round_robin(case: str, tools: list[Tool], repeats: int, *, warmup: int = 0) -> list[Row]:
    """Each round runs every tool once, in turn, so drift and noise hit them all alike.

    A tool that hit the cap is not run again in this case (it would only take CAP again).
    """
    for _ in range(warmup):
        for _name, run in tools:
            run()
    rows = {name: Row(case, name, []) for name, _ in tools}
    for round_ in range(repeats):
        for name, run in tools:
            row = rows[name]
            if row.capped:
                continue
            row.runs.append(run())
            progress(f"{case:<22} {name[:56]:<56} {round_ + 1}/{repeats}: {row.runs[-1].seconds:7.3f} s")
    return list(rows.values())


def answer(row: Row) -> str:
    """What the tool said, each distinct answer once (a flaky tool shows all of them)."""
    seen: list[str] = []
    for run in row.runs:
        if run.capped:
            text = f"no answer; killed at the {CAP:g} s cap, not repeated"
            if run.said:
                text = run.said
        elif run.status:
            text = f"exit {run.exit_code} {run.status}" + (f": {', '.join(run.causes)}" if run.causes else "")
        elif row.tool.startswith("Flower"):
            text = run.said
        else:
            text = f"exit {run.exit_code}" + (f": {run.said[-60:]}" if run.said else "")
        if run.problem:
            text += f" FAILED ({run.problem})"
        if text not in seen:
            seen.append(text)
    return " / ".join(seen)


def healthy_section(shared: Shared, repeats: int) -> Section:
    """Section 1: one healthy worker; celery-probe beside inspect ping, Flower and the floor."""
    by_tool = {c.tool: c for c in commands(shared.tools, shared.workdir / "reports", down=False)}
    tools: list[Tool] = [
        (PROBE, shared.cli(by_tool[PROBE])),
        (PEER, shared.cli(by_tool[PEER])),
        (FLOWER_CHECK, lambda: shared.flower.check([shared.worker])),
        (FLOOR, shared.cli(by_tool[FLOOR])),
        (CONNECT_FLOOR, shared.cli(by_tool[CONNECT_FLOOR])),
    ]
    rows = round_robin("healthy", tools, repeats, warmup=1)
    mine, peer, flower, floor, connect_floor = rows
    section = Section(
        "1. Healthy verdict, one worker (ping, queues, round trip): wall time per check",
        ["tool", "runs", "median s", "min s", "max s", "answer", "celery-probe / this"],
    )
    targets = {PEER: TARGETS["peer"], FLOOR: TARGETS["floor"]}
    for row in rows:
        versus = "-" if row is mine else ratio(mine, row, targets.get(row.tool))
        section.rows.append([row.tool, *row_cells(row), answer(row), versus])
        section.data.append(row.as_json() | {"answer": answer(row)})
    vs_peer, vs_floor = mine.median / peer.median, mine.median / floor.median
    section.notes += [
        (f"Goal celery-probe <= {TARGETS['peer']:g} x `celery inspect ping`: "
        f"{'met' if vs_peer <= TARGETS['peer'] else 'MISSED'} ({vs_peer:.2f}). "
        f"Goal celery-probe <= {TARGETS['floor']:g} x the floor: "
        f"{'met' if vs_floor <= TARGETS['floor'] else 'MISSED'} ({vs_floor:.2f})."),
        (f"The floor imports pytest and celery, but `import celery` is lazy and loads neither the app nor "
         f"kombu nor redis-py; the second floor ({CONNECT_FLOOR}) is the least any check through Celery "
         f"does: celery-probe is {mine.median / connect_floor.median:.2f} x that."),
        ("celery-probe, inspect ping and the floor are timed from process spawn to exit (as cron or an exec "
        "probe runs them); Flower is a service that was already running: its figure is two HTTP requests "
        f"on new loopback connections, its own start-up not counted (median {flower.median * 1000:.1f} ms)."),
    ]
    return section


def fault_section(shared: Shared, repeats: int) -> Section:
    """Section 2: after each fault, every tool in turn, and how long Flower takes to say so."""
    section = Section(
        f"2. Time to verdict after a fault (celery-probe --deadline {DEADLINE:g}; every tool capped at {CAP:g} s)",
        ["fault", "tool", "runs", "median s", "min s", "max s", "answer", "celery-probe / this"],
    )
    by_tool = {c.tool: c for c in commands(shared.tools, shared.workdir / "reports", down=True)}
    probe_name = next(name for name in by_tool if name.startswith("celery-probe"))
    flower_ready = True
    for case, state in DOWN_CASES:
        tools: list[Tool] = [
            (probe_name, shared.cli(by_tool[probe_name])),
            (PEER, shared.cli(by_tool[PEER])),
            (FLOWER_CHECK, lambda: shared.flower.check([shared.worker])),
        ]
        watched: Run | None = None
        with state(shared.deployment):
            watch = Watch(shared.flower, shared.worker).start() if flower_ready else None
            finished = False
            try:
                rows = round_robin(case, tools, repeats)
                finished = True
            finally:
                if watch is not None:
                    watched = watch.finish(wait=finished)
        if watched is not None:
            rows.append(Row(case, FLOWER_WATCH, [watched]))
        if case != DOWN_CASES[-1][0]:
            flower_ready = _flower_recovers(shared, section, case)
        mine = rows[0]
        for row in rows:
            versus = "-" if row is mine or row.tool == FLOWER_WATCH else ratio(mine, row)
            section.rows.append([case, row.tool, *row_cells(row), answer(row), versus])
            section.data.append(row.as_json() | {"answer": answer(row)})
        if watched is None:
            section.rows.append([case, FLOWER_WATCH, "0", "-", "-", "-",
                                 "not measured: Flower did not see the worker alive before this fault", "-"])
    section.notes += [
        ("Fault -> status says not alive: from the fault, this process asks Flower's /api/workers?status=true "
        "every 0.1 s (beside the timed runs) until the worker is no longer reported alive. Flower judges "
        "a worker only by its event heartbeats (every 2 s, expired after two periods); it does not ask the "
        "broker or the worker."),
        f"A capped row (>= {CAP:g}) ran once: the tool was killed at the cap and not run again.",
    ]
    return section


def _flower_recovers(shared: Shared, section: Section, case: str) -> bool:
    """After a fault is undone, wait (bounded) until Flower sees the worker alive again."""
    try:
        shared.flower.wait_warm([shared.worker])
        return True
    except (TimeoutError, GaveUp) as exc:  # reported; the bench goes on
        section.notes.append(f"After '{case}', Flower did not see the worker alive again ({exc}); "
                             "its fault-to-status time is not measured for the next fault.")
        return False
