#!/usr/bin/env python
"""celery-probe beside its peers (``celery inspect ping``, Flower 2.x), measured in one run.

Run it as ``python bench/bench_peers.py [--repeat N] [--json PATH]`` with the Python of the
virtualenv that has celery-probe (with its ``serve`` extra) and Flower (``pip install
flower``) installed. Everything runs on private processes on loopback: redis-servers on free
ports, solo workers of ``bench/bench_app.py`` that send heartbeats, Flower, and
``celery-probe serve``; it never talks to any other broker. It prints four tables:

1. healthy verdict, one worker: ``celery-probe run --expect-workers 1`` beside ``inspect
   ping``, Flower's ``/api/workers?status=true`` + ``/api/queues/length`` and the floor
   (``python -c "import pytest, celery"``), with the goals <= 0.4 x inspect ping and
   <= 1.5 x the floor;
2. time to verdict after a worker SIGKILL, a broker SIGSTOP, a broker stop (peers capped at
   30 s), and how long Flower takes to stop calling the worker alive;
3. scale: 1,000 queues x 4 priority lists (time, queue probe duration, Redis commands) beside
   Flower's ``/api/queues/length``, and 20 workers answering ping;
4. ``celery-probe serve``'s health path under wrk load, broker healthy and frozen;
5. footprint: peak RSS per check, Redis commands per check, keys left after 1,000 runs.

Within a case the tools run round-robin, so background noise hits them alike. Before
measuring it waits (bounded) for the 1-minute load average to drop below ``--max-load``.
Every process it starts is stopped on the way out, also on Ctrl-C or SIGTERM.

Exit codes: 0 done; 1 a run broke its expectation (celery-probe not healthy in a healthy
case, not down in a fault case); 2 missing prerequisite (Flower, redis-server); 130 interrupted.
A missed goal is printed as MISSED and does not change the exit code.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_run import CAP, DEADLINE, find_tools, raise_on_sigterm
from flower_peer import flower_version
from peers_footprint import footprint_section
from peers_report import Section, header, load_average, machine_info, wait_for_quiet
from peers_scale import scale_section
from peers_serve import Load, serve_section
from peers_verdict import fault_section, healthy_section, shared_deployment

from celery_probe.testing import RedisServer

SECTIONS = "12345"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    add = parser.add_argument
    add("--repeat", type=int, default=7, help="timed runs per tool in the healthy case (default 7)")
    add("--down-repeat", type=int, default=3, help="timed runs per tool after each fault (default 3)")
    add("--scale-repeat", type=int, default=3, help="timed runs per tool in the scale cases (default 3)")
    add("--queues", type=int, default=1000, help="queues in the scale case (default 1000)")
    add("--workers", type=int, default=20, help="workers in the scale case (default 20)")
    add("--duration", type=float, default=10.0, help="seconds per serve load phase (default 10)")
    add("--connections", type=int, default=8, help="wrk connections (default 8)")
    add("--threads", type=int, default=1, help="wrk threads (default 1)")
    add("--max-requests", type=int, default=500_000, help="request cap per serve load phase (default 500000)")
    add("--interval", type=float, default=5.0, help="serve --interval (default 5)")
    add("--serve-deadline", type=float, default=2.0, help="serve --deadline (default 2)")
    add("--max-load", type=float, default=1.5, help="wait until the 1-min load average is below this (default 1.5)")
    add("--max-wait", type=float, default=600.0, help="wait at most this many seconds for it (default 600; 0: no wait)")
    add("--litter-runs", type=int, default=1000, help="celery-probe runs in the keys-left case (default 1000)")
    add("--peer-litter-runs", type=int, default=100, help="inspect ping runs in the keys-left case (default 100)")
    add("--sections", default=SECTIONS, help=f"which tables to measure, e.g. 13 (default {SECTIONS})")
    add("--json", type=Path, metavar="PATH", help="also write every figure as JSON here")
    args = parser.parse_args(argv)
    if min(args.repeat, args.down_repeat, args.scale_repeat, args.queues, args.workers, args.connections,
           args.threads, args.max_requests, args.litter_runs, args.peer_litter_runs) < 1 or args.duration <= 0:
        parser.error("counts must be at least 1 and --duration positive")
    if not set(args.sections) <= set(SECTIONS):
        parser.error(f"--sections takes digits of {SECTIONS}")
    return args


def missing_prerequisite() -> str | None:
    """Why the benchmark cannot run here, or None."""
    if flower_version() is None:
        return (f"Flower is not installed for {sys.executable}; install it with `{Path(sys.executable).parent}/pip "
                "install flower` (see bench/README.md)")
    if not RedisServer.available():
        return "redis-server is not installed (apt-get install redis-server)"
    return None


def measure(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, str], dict[str, Section]]:
    """Sections 1, 4, 5 and 2 on the shared deployment (2 last: it stops the broker), then 3."""
    tools = find_tools()
    sections: dict[str, Section] = {}
    info: dict[str, str] = {}
    load = Load(args.duration, args.connections, args.threads, args.max_requests, check_repeats=args.repeat)
    with shared_deployment(workdir, tools) as shared:
        info = machine_info(shared.deployment.redis, str(flower_version()))
        if "1" in args.sections:
            sections["1"] = healthy_section(shared, args.repeat)
        if "4" in args.sections:
            sections["4"] = serve_section(shared, load, interval=args.interval, deadline=args.serve_deadline)
            shared.flower.wait_warm([shared.worker])
        if "5" in args.sections:
            sections["5"] = footprint_section(shared, repeats=args.repeat, probe_runs=args.litter_runs,
                                              peer_runs=args.peer_litter_runs)
        if "2" in args.sections:
            sections["2"] = fault_section(shared, args.down_repeat)
    if "3" in args.sections:
        sections["3"] = scale_section(workdir, tools, queues=args.queues, workers=args.workers,
                                      repeats=args.scale_repeat)
    return info, sections


def failures(sections: dict[str, Section]) -> list[str]:
    """Every run that broke its expectation, as 'tool: problem'."""
    return [f"{row['case']} / {row['tool']}: {problem}"
            for section in sections.values() for row in section.data for problem in row.get("problems") or []]


def write_json(path: Path, args: argparse.Namespace, info: dict[str, str], quiet: dict[str, Any],
               load_end: str, sections: dict[str, Section]) -> None:
    payload = {
        "machine": info | {"load-average-end": load_end}, "quiet_wait": quiet,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        | {"cap_s": CAP, "deadline_s": DEADLINE},
        "sections": {key: {"title": s.title, "notes": s.notes, "rows": s.data} for key, s in sorted(sections.items())},
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    problem = missing_prerequisite()
    if problem:
        print(f"bench_peers.py: {problem}", file=sys.stderr)
        return 2
    raise_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="celery-probe-bench-peers-"))
    try:
        quiet = wait_for_quiet(args.max_load, args.max_wait)
        info, sections = measure(args, workdir)
    except KeyboardInterrupt:
        print("\nbench_peers.py: interrupted; everything it started has been stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_end = load_average()
    print()
    print(header(info, quiet, load_end))
    for key in sorted(sections):
        print()
        print(sections[key].render())
    if args.json:
        write_json(args.json, args, info, quiet, load_end, sections)
        print(f"\nJSON written to {args.json}")
    broken = failures(sections)
    if broken:
        print(f"\n!!! {len(broken)} run(s) broke their expectation: " + "; ".join(broken), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
