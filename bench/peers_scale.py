"""Section 3 of bench_peers.py: 1,000 queues x 4 priority lists, and 20 workers answering ping.

Each sub-case has its own private redis-server, workers (sending heartbeats, so Flower sees
them) and Flower, started after the workers because Flower learns the queues from the
workers' ``active_queues``:

* 1,000 queues, a message in each of their 4 priority lists, consumed by no worker (the one
  worker consumes ``celery``): what celery-probe measures and what Flower can see;
* the same 1,000 queues consumed by one worker (it drains them, so the lists are empty):
  both tools on the same queues;
* 20 solo workers: ``--expect-workers 20`` beside ``inspect ping`` and Flower's worker list.

Redis commands come from ``INFO commandstats`` before and after each timed check, less the
background (the workers' BRPOP and heartbeats, Flower's broadcasts) measured over an idle
window at the start of the sub-case; this process's own INFO calls are not counted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from bench_run import APP, BENCH_DIR, PEER, Command, Row, Run, child_env, run_once
from bench_scale import commands as commandstats
from bench_scale import fill
from flower_peer import (
    QUEUES,
    REFRESH,
    STATUS,
    Answer,
    Flower,
    HeartbeatWorker,
    alive_text,
    queues_text,
)
from peers_report import Section, row_cells
from peers_verdict import answer, round_robin

from celery_probe.testing import RedisServer

QUEUE_PROBE = "test_queues_below_threshold"
IDLE_WINDOW = 3.0  # seconds of background Redis traffic measured before each sub-case
WORKERS_START_TIMEOUT = 180.0


@dataclass
class Scale:
    """One sub-case's processes."""

    redis: RedisServer
    workers: list[HeartbeatWorker]
    flower: Flower
    env: dict[str, str]
    workdir: Path


@contextmanager
def scale_deployment(workdir: Path, consumers: dict[str, list[str]], filled: list[str]) -> Iterator[Scale]:
    """redis-server (``filled`` queues get a message per priority list), workers, then Flower."""
    redis = RedisServer()
    workers: list[HeartbeatWorker] = []
    flower: Flower | None = None
    try:
        redis.start()
        fill(redis, filled)
        env = child_env({"BENCH_BROKER": redis.url(0), "BENCH_BACKEND": redis.url(1)})
        workers = [HeartbeatWorker(APP, name=name, queues=queues, env=env, pythonpath=[BENCH_DIR])
                   for name, queues in consumers.items()]
        with ThreadPoolExecutor(max_workers=len(workers)) as pool:  # start them side by side
            for future in [pool.submit(w.start, timeout=WORKERS_START_TIMEOUT) for w in workers]:
                future.result()
        flower = Flower(APP, env, workdir).start()
        flower.wait_warm([w.name for w in workers], queues=len({q for qs in consumers.values() for q in qs}),
                         timeout=120)
        yield Scale(redis, workers, flower, env, workdir)
    finally:
        try:
            if flower is not None:
                flower.close()
        finally:
            if workers:
                with ThreadPoolExecutor(max_workers=len(workers)) as pool:
                    list(pool.map(lambda w: w.close(), workers))
            redis.close()


def background(redis: RedisServer, window: float = IDLE_WINDOW) -> dict[str, float]:
    """Redis commands per second while nobody probes (the workers' and Flower's own traffic)."""
    before = commandstats(redis)
    time.sleep(window)  # measuring an idle period is the point
    return {k: v / window for k, v in own_delta(before, commandstats(redis)).items()}


def own_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Commands between two reads, less the one INFO of the first read (Redis counts it after)."""
    changed = {k: after[k] - before.get(k, 0) for k in after}
    changed["cmdstat_info"] = changed.get("cmdstat_info", 0) - 1
    return {k: v for k, v in changed.items() if v > 0}


def counting(redis: RedisServer, rates: dict[str, float], run: Callable[[], Run],
             sink: list[dict[str, int]]) -> Callable[[], Run]:
    """Wrap a timed check so the Redis commands it caused are appended to ``sink``."""

    def wrapped() -> Run:
        before = commandstats(redis)
        started = time.monotonic()
        result = run()
        elapsed = time.monotonic() - started
        used = own_delta(before, commandstats(redis))
        net = {k.removeprefix("cmdstat_"): round(v - rates.get(k, 0.0) * elapsed) for k, v in used.items()}
        sink.append({k: v for k, v in net.items() if v > 0})
        return result

    return wrapped


def probe_command(tools: dict[str, str], report_dir: Path, queues: list[str], workers: int,
                  expect: str | None) -> Command:
    argv = [tools["celery-probe"], "run", "-A", APP, "--format", "json", "--report-dir", str(report_dir),
            "--expect-workers", str(workers)]
    if queues:
        argv += ["-Q", ",".join(queues)]
    label = f"celery-probe run -Q <{len(queues)} queues>" if queues else f"celery-probe run --expect-workers {workers}"
    return Command(label, tuple(argv), verdict=True, expect_status=expect, expect_exit=0 if expect == "healthy" else None)


def probe_run(scale: Scale, command: Command, report_dir: Path, details: list[dict[str, Any]]) -> Callable[[], Run]:
    """Run celery-probe; record the queue probe's call duration and the verdict's figures."""

    def run() -> Run:
        result = run_once(command, scale.env, scale.workdir)
        details.append(read_reports(report_dir))
        return result

    return run


def read_reports(report_dir: Path) -> dict[str, Any]:
    """From latest.json and verdict.json: the queue probe's call seconds, queues, length, workers."""
    out: dict[str, Any] = {}
    try:
        report = json.loads((report_dir / "latest.json").read_text())
        verdict = json.loads((report_dir / "verdict.json").read_text())
    except (OSError, ValueError):
        return out
    for test in report.get("tests", []):
        if test.get("nodeid", "").endswith(f"::{QUEUE_PROBE}"):
            out["queue_probe_s"] = (test.get("call") or {}).get("duration")
    out["queues"] = len(verdict.get("queues") or {})
    out["queue_length"] = verdict.get("queue_length")
    out["workers"] = len(verdict.get("workers") or {})
    return out


def commands_text(samples: list[dict[str, int]]) -> str:
    """Median total, and the biggest commands of the run closest to it."""
    if not samples:
        return "-"
    totals = [sum(s.values()) for s in samples]
    mid = median(totals)
    closest = min(samples, key=lambda s: abs(sum(s.values()) - mid))
    top = sorted(closest.items(), key=lambda kv: -kv[1])[:4]
    return f"{mid:,.0f} ({', '.join(f'{k} {v:,}' for k, v in top)})"


def queue_case(title: str, scale: Scale, tools: dict[str, str], queues: list[str], repeats: int,
               expect: str | None) -> list[tuple[Row, list[str], dict[str, Any]]]:
    """celery-probe watching ``queues`` beside Flower's /api/queues/length, round-robin."""
    report_dir = scale.workdir / f"reports-{scale.redis.port}"
    rates = background(scale.redis)
    probe_cmds: list[dict[str, int]] = []
    flower_cmds: list[dict[str, int]] = []
    details: list[dict[str, Any]] = []
    command = probe_command(tools, report_dir, queues, 1, expect)
    flower_name = "Flower /api/queues/length"
    rows = round_robin(title, [
        (command.tool, counting(scale.redis, rates, probe_run(scale, command, report_dir, details), probe_cmds)),
        (flower_name, counting(scale.redis, rates, lambda: scale.flower.timed(QUEUES, queues_text), flower_cmds)),
    ], repeats, warmup=1)
    mine, flower = rows
    mine_details = details[-repeats:]
    calls = [d["queue_probe_s"] for d in mine_details if d.get("queue_probe_s") is not None]
    last = mine_details[-1] if mine_details else {}
    said = (f"; {last.get('queues')} queues watched, queue_length {last.get('queue_length')}, "
            f"{last.get('workers')} worker(s) answered")
    return [
        (mine, [f"{median(calls):.3f}" if calls else "-", commands_text(probe_cmds[-repeats:]), answer(mine) + said],
         {"queue_probe_call_s": calls, "redis_commands": probe_cmds[-repeats:], "reports": mine_details}),
        (flower, ["-", commands_text(flower_cmds[-repeats:]), answer(flower)],
         {"redis_commands": flower_cmds[-repeats:]}),
    ]


def workers_case(title: str, scale: Scale, tools: dict[str, str], repeats: int) -> list[tuple[Row, list[str], dict[str, Any]]]:
    """celery-probe --expect-workers N beside inspect ping and Flower's worker list."""
    report_dir = scale.workdir / f"reports-{scale.redis.port}"
    names = [w.name for w in scale.workers]
    details: list[dict[str, Any]] = []
    command = probe_command(tools, report_dir, [], len(names), "healthy")
    peer = Command(PEER, (tools["celery"], "-A", APP, "inspect", "ping"), expect_exit=0)

    def listed(a: Answer) -> str:
        return f"lists {len(a.body)} workers" if a.status == 200 and isinstance(a.body, dict) else a.text()

    rows = round_robin(title, [
        (command.tool, probe_run(scale, command, report_dir, details)),
        (PEER, lambda: run_once(peer, scale.env, scale.workdir)),
        ("Flower /api/workers?status=true", lambda: scale.flower.timed(STATUS, lambda a: alive_text(a, names))),
        ("Flower /api/workers?refresh=1 (live inspect)", lambda: scale.flower.timed(REFRESH, listed)),
    ], repeats, warmup=1)
    answered = [d.get("workers") for d in details[-repeats:]]
    out = []
    for row in rows:
        said = answer(row) + (f"; {answered[-1]} answered" if row is rows[0] and answered else "")
        out.append((row, ["-", "-", said], {"workers_answered": answered} if row is rows[0] else {}))
    return out


def scale_section(workdir: Path, tools: dict[str, str], *, queues: int, workers: int, repeats: int) -> Section:
    """Section 3: the three sub-cases, each on its own private deployment, one after the other."""
    names = [f"q{i}" for i in range(queues)]
    section = Section(
        f"3. Scale: {queues:,} queues x 4 priority lists, and {workers} workers answering ping",
        ["case", "tool", "runs", "median s", "min s", "max s", "queue probe call s", "Redis commands per check",
         "answer"],
    )
    found: list[tuple[str, Row, list[str], dict[str, Any]]] = []
    unconsumed = f"{queues:,} queues, 1 msg per priority list, no consumer"
    with scale_deployment(workdir, {"scale-celery@%h": ["celery"]}, names) as scale:
        found += [(unconsumed, *r) for r in queue_case(unconsumed, scale, tools, ["celery", *names], repeats, None)]
    consumed = f"{queues:,} queues consumed by 1 worker (lists empty)"
    with scale_deployment(workdir, {"scale-all@%h": ["celery", *names]}, []) as scale:
        found += [(consumed, *r) for r in queue_case(consumed, scale, tools, ["celery", *names], repeats, "healthy")]
    many = f"{workers} workers"
    with scale_deployment(workdir, {f"w{i}@%h": ["celery"] for i in range(workers)}, []) as scale:
        found += [(many, *r) for r in workers_case(many, scale, tools, repeats)]
    for case, row, cells, extra in found:
        section.rows.append([case, row.tool, *row_cells(row), *cells])
        section.data.append(row.as_json() | extra | {"answer": cells[-1]})
    section.notes += [
        (f"queue probe call s: the call duration of {QUEUE_PROBE} in reports/latest.json (the probe that reads "
        "every watched queue's priority lists and unacked count in one pipelined round trip)."),
        ("Redis commands per check: INFO commandstats deltas around each check, less the background rate "
        f"measured over {IDLE_WINDOW:g} s before the sub-case; median over the runs, biggest commands in brackets."),
        ("Flower's /api/queues/length reads only queues some worker consumes (their active_queues, learned "
        "when Flower starts or on ?refresh=1); a queue nobody consumes is invisible to it, whatever it holds."),
        ("celery-probe sends its round trip through at most 20 consumed queues per run (--roundtrip-max-queues), "
        "taking turns across runs."),
    ]
    return section
