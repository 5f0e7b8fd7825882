"""How many CPUs this process may use: its CPU affinity, and its cgroup's CPU quota.

``os.cpu_count()`` counts the host's CPUs. A container limited to one CPU on a 32-CPU node
(Kubernetes' ``limits.cpu``, Docker's ``--cpus``: a cgroup quota, not an affinity) would then
start 64 probe runs at once, each waiting for a CPU inside its own measurements, which is what
serve's run slots are there to prevent. The quota is ``cpu.max`` in cgroup v2 and
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` in v1; every cgroup from the process's own up to
the root limits it, so the smallest counts. A quota of 1.5 CPUs counts as 2.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_V1_CPU = ("cpu", "cpu,cpuacct", "cpuacct,cpu")  # where distributions mount v1's cpu controller


def usable_cpus() -> int:
    """The CPUs this process may run on, capped by its cgroup's CPU quota; at least 1."""
    if hasattr(os, "sched_getaffinity"):
        allowed = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - not Linux
        allowed = os.cpu_count() or 1
    quota = cgroup_quota_cpus()
    return max(1, allowed if quota is None else min(allowed, quota))


def quota_cpus(quota_us: int, period_us: int) -> int | None:
    """CPUs a quota of ``quota_us`` per ``period_us`` allows, rounded up; None: no quota."""
    if quota_us <= 0 or period_us <= 0:  # v1 says -1 for none
        return None
    return max(1, math.ceil(quota_us / period_us))


def parse_cpu_max(text: str) -> int | None:
    """cgroup v2's ``cpu.max`` (``max 100000`` or ``150000 100000``) as CPUs; None: no quota."""
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        return quota_cpus(int(fields[0]), int(fields[1]))
    except ValueError:
        return None


def cgroup_quota_cpus(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = CGROUP_ROOT) -> int | None:
    """The smallest CPU quota of this process's cgroups (v2, else v1), as CPUs; None: no quota
    or no cgroup to read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    found: list[int] = []
    for line in lines:  # NUMBER:CONTROLLERS:PATH, CONTROLLERS empty for v2
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        _number, controllers, path = parts
        if controllers == "":  # cgroup v2's unified hierarchy
            found += _along(root, path, lambda folder: parse_cpu_max(_read(folder / "cpu.max")))
        elif "cpu" in controllers.split(","):
            for mount in (root / name for name in CGROUP_V1_CPU):
                if mount.is_dir():
                    found += _along(mount, path, _v1_quota)
                    break
    return min(found) if found else None


def _along(mount: Path, path: str, quota_of: Callable[[Path], int | None]) -> list[int]:
    """The quotas of ``path``'s cgroup and of each of its parents up to ``mount``. Where the
    mount is a container's own cgroup, ``path`` names the host's folders, which are absent
    here: the walk goes on up to the mount."""
    quotas = []
    # A process outside its cgroup namespace's root sees "/../..": nothing below the mount to read.
    folder = mount.joinpath(*[part for part in path.split("/") if part not in ("", ".", "..")])
    while True:
        quota = quota_of(folder)
        if quota is not None:
            quotas.append(quota)
        if folder == mount or mount not in folder.parents:
            return quotas
        folder = folder.parent


def _v1_quota(folder: Path) -> int | None:
    try:
        return quota_cpus(int(_read(folder / "cpu.cfs_quota_us")), int(_read(folder / "cpu.cfs_period_us")))
    except ValueError:
        return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
