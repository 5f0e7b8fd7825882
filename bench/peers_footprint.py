"""Section 5 of bench_peers.py: what a check costs beyond time.

* peak RSS of one check process (``ru_maxrss`` from ``wait4``), and Flower's resident
  high-water mark (``VmHWM``) for comparison;
* Redis commands per check: ``INFO commandstats`` around each check, less the background
  rate of the worker's and Flower's own traffic measured while nobody checks;
* keys left behind: every key of the broker and backend databases is listed before and after
  N checks (``SCAN``); a key that appeared and is still there is litter.

It runs on the shared deployment of sections 1 and 2 (one worker, Flower watching it).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bench_run import CAP, PEER, PROBE, commands, run_once
from peers_report import Section
from peers_scale import background, counting
from peers_verdict import FLOWER_CHECK, Shared, progress

from celery_probe.testing import RedisServer

DATABASES = (0, 1)  # the bench app's broker and result backend


@dataclass
class Peak:
    """Peak RSS of one finished process, and how it exited."""

    kib: int
    exit_code: int | None


def peak_rss(argv: tuple[str, ...], env: dict[str, str], cwd: os.PathLike[str] | str) -> Peak:
    """Run ``argv`` to completion (capped at CAP) and read its peak RSS from the kernel."""
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    timer = threading.Timer(CAP, _kill_group, args=(proc.pid,))
    timer.start()
    try:
        _pid, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
    return Peak(int(usage.ru_maxrss), proc.returncode)


def _kill_group(pid: int) -> None:
    """SIGKILL a capped check and what it spawned; it may have exited just now."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def resident_high_water(pid: int) -> int | None:
    """``VmHWM`` of a running process in KiB (Linux), or None."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def all_keys(redis: RedisServer) -> set[tuple[int, str]]:
    """Every key of the bench databases, as (db, name)."""
    found: set[tuple[int, str]] = set()
    for db in DATABASES:
        with redis.client(db) as client:
            found |= {(db, key.decode() if isinstance(key, bytes) else key) for key in client.scan_iter(count=1000)}
    return found


def litter(shared: Shared, run: Callable[[], object], count: int, parallel: int) -> tuple[int, list[str]]:
    """Keys that ``count`` checks (``parallel`` at a time) left behind, and a few of their names."""
    redis = shared.deployment.redis
    before = all_keys(redis)
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(lambda _: run(), range(count)))
    left = sorted(all_keys(redis) - before)
    return len(left), [f"db{db}:{name}" for db, name in left[:3]]


def footprint_section(shared: Shared, *, repeats: int, probe_runs: int, peer_runs: int) -> Section:
    """Section 5: peak RSS, Redis commands per check and keys left after many checks."""
    by_tool = {c.tool: c for c in commands(shared.tools, shared.workdir / "reports", down=False)}
    probe, peer = by_tool[PROBE], by_tool[PEER]
    section = Section(
        "5. Footprint: memory, broker commands and litter per check",
        ["tool", "peak RSS MiB (median)", "Redis commands per check (median)", "checks run", "keys left", "examples"],
    )
    progress("footprint: peak RSS")
    rss = {tool.tool: [peak_rss(tool.argv, shared.env, shared.workdir) for _ in range(repeats)] for tool in (probe, peer)}
    progress("footprint: Redis commands per check")
    redis = shared.deployment.redis
    rates = background(redis)
    used: dict[str, list[dict[str, int]]] = {PROBE: [], PEER: [], FLOWER_CHECK: []}
    checks = {
        PROBE: counting(redis, rates, lambda: run_once(probe, shared.env, shared.workdir), used[PROBE]),
        PEER: counting(redis, rates, lambda: run_once(peer, shared.env, shared.workdir), used[PEER]),
        FLOWER_CHECK: counting(redis, rates, lambda: shared.flower.check([shared.worker]), used[FLOWER_CHECK]),
    }
    for _ in range(repeats):
        for check in checks.values():
            check()
    progress(f"footprint: keys left after {probe_runs} celery-probe runs and {peer_runs} inspect pings")
    left = {
        PROBE: (probe_runs, *litter(shared, lambda: run_once(probe, shared.env, shared.workdir), probe_runs, 2)),
        PEER: (peer_runs, *litter(shared, lambda: run_once(peer, shared.env, shared.workdir), peer_runs, 4)),
    }
    flower_hwm = resident_high_water(shared.flower.proc.pid) if shared.flower.proc else None
    for tool in (PROBE, PEER, FLOWER_CHECK):
        peaks = rss.get(tool)
        mib = (f"{statistics.median(p.kib for p in peaks) / 1024:.1f}" if peaks
               else (f"{flower_hwm / 1024:.1f} (resident service, VmHWM)" if flower_hwm else "-"))
        per_check = [sum(c.values()) for c in used[tool]]
        top = _top_commands(used[tool])
        runs, count, examples = left.get(tool, (None, None, []))
        section.rows.append([
            tool, mib, f"{statistics.median(per_check):.0f} ({top})" if per_check else "-",
            "-" if runs is None else str(runs), "-" if count is None else str(count), ", ".join(examples) or "-",
        ])
        section.data.append({"tool": tool, "peak_rss_kib": [p.kib for p in peaks] if peaks else flower_hwm,
                             "commands": used[tool], "litter_runs": runs, "keys_left": count,
                             "examples": examples, "problems": _problems(tool, peaks, count)})
    section.notes += [
        ("Peak RSS: ru_maxrss of each check process (wait4), median of the runs; Flower's figure is its "
         "high-water mark as a long-running service, not per check."),
        ("Redis commands: INFO commandstats deltas around each check, less the background rate of the "
         "worker's polling and Flower's own traffic measured over an idle window; the commands most used in "
         "brackets."),
        ("Keys left: all keys of the broker (db 0) and backend (db 1) listed with SCAN before and after the "
         "checks; the worker and Flower were running throughout."),
    ]
    return section


def _top_commands(samples: list[dict[str, int]], keep: int = 3) -> str:
    if not samples:
        return ""
    medians = {name: statistics.median(s.get(name, 0) for s in samples) for name in {k for s in samples for k in s}}
    ranked = sorted(((v, k) for k, v in medians.items() if v > 0), reverse=True)[:keep]
    return ", ".join(f"{k} {v:g}" for v, k in ranked)


def _problems(tool: str, peaks: list[Peak] | None, keys_left: int | None) -> list[str]:
    problems = []
    if tool == PROBE:
        if peaks and any(p.exit_code != 0 for p in peaks):
            problems.append("a celery-probe run was not healthy while measuring memory")
        if keys_left:
            problems.append(f"{keys_left} keys left behind")
    return problems
