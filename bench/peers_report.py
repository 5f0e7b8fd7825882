"""Tables, the machine header and the wait for a quiet machine, for bench_peers.py."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from bench_run import Row, cpu_model, machine


@dataclass
class Section:
    """One printed table: a title, its columns, its rows, notes under it and the same as JSON."""

    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: list[dict[str, Any]] = field(default_factory=list)

    def render(self) -> str:
        lines = [self.title, "", markdown(self.header, self.rows)]
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table with padded columns, readable as plain text too."""
    table = [list(header), *[list(row) for row in rows]]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    out = ["| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)) + " |" for line in table]
    out.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(out)


def seconds(value: float | None, capped: bool = False) -> str:
    if value is None:
        return "-"
    return f">= {value:.0f}" if capped else f"{value:.3f}"


def ratio(mine: Row, other: Row, target: float | None = None) -> str:
    """celery-probe's median over ``other``'s; ``<=`` when ``other`` was capped (a bound only)."""
    value = mine.median / other.median if other.median > 0 else float("inf")
    text = f"<= {value:.2f}" if other.capped else (f"{value:.2f}" if value < 100 else f"{value:.0f}")
    if target is not None:
        text += f" ({'met' if value <= target else 'MISSED'}, target <= {target:g})"
    return text


def row_cells(row: Row) -> list[str]:
    """runs, median, min, max for a row (a capped row shows the cap as a lower bound)."""
    times = row.times
    return [str(len(times)), seconds(row.median, row.capped), seconds(min(times)), seconds(max(times), row.capped)]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def wait_for_quiet(limit: float, max_wait: float, poll: float = 15.0) -> dict[str, Any]:
    """Poll the 1-minute load average until it is below ``limit``, at most ``max_wait`` seconds."""
    started = time.monotonic()
    for _ in range(int(max_wait / poll) + 2):
        load = os.getloadavg()[0]
        waited = time.monotonic() - started
        if load < limit:
            return {"limit": limit, "waited_s": round(waited), "reached": True, "load_1m": load}
        if waited >= max_wait:
            break
        print(f"load average {load:.2f} >= {limit:g}; waiting (up to {max_wait:g} s) ...", file=sys.stderr, flush=True)
        time.sleep(min(poll, max(0.0, max_wait - waited)))
    return {"limit": limit, "waited_s": round(time.monotonic() - started), "reached": False,
            "load_1m": os.getloadavg()[0]}


def tool_version(argv: list[str]) -> str:
    """First line a tool prints about its version, or '-' when it is missing."""
    if not shutil.which(argv[0]):
        return "-"
    try:
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "-"
    line = (done.stdout + done.stderr).strip().splitlines()
    return line[0].split()[1] if line and len(line[0].split()) > 1 else "-"


def machine_info(redis: Any, flower: str) -> dict[str, str]:
    """bench_run's machine facts plus Flower, the HTTP stack and wrk."""
    info = machine(redis)
    info["cpu"] = cpu_model()
    info["flower"] = flower
    for name in ("uvicorn", "starlette", "tornado"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "-"
    info["wrk"] = tool_version(["wrk", "-v"])
    return info


def header(info: dict[str, str], quiet: dict[str, Any], load_end: str) -> str:
    """The lines that say where and under what load the figures were measured."""
    waited = (f"waited {quiet['waited_s']} s for the 1-min load to drop below {quiet['limit']:g}: "
              + ("reached" if quiet["reached"] else "NOT reached, measured anyway"))
    return "\n".join([
        (f"Machine: {info['cpu']}, {info['cores']} cores, {info['os']}; Python {info['python']}, "
        f"celery {info['celery']}, kombu {info['kombu']}, redis-py {info['redis-py']}, flower {info['flower']} "
        f"(tornado {info['tornado']}), Redis server {info['redis-server']}, uvicorn {info['uvicorn']}, "
        f"starlette {info['starlette']}, wrk {info['wrk']}, pytest {info['pytest']}, "
        f"celery-probe {info['celery-probe']}"),
        f"Load average (1/5/15 min): at start {info['load-average']}, at end {load_end}; {waited}",
        f"Platform: {platform.platform()}",
    ])
