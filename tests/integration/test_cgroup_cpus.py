"""A real process in a real cgroup with a CPU quota (as a container's CPU limit makes one):
serve's default run slots count the quota, not the host's CPUs.

Needs root and a writable cgroup filesystem (cgroup v1's cpu controller, or v2 with the cpu
controller enabled at the root); the cgroup it makes is removed at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from celery_probe.run.cpus import CGROUP_ROOT, CGROUP_V1_CPU

QUOTA = "100000"  # one CPU per 100 ms period
PERIOD = "100000"
PRINT_DEFAULTS = ("from celery_probe.run.cpus import usable_cpus; from celery_probe.run.runner import RunSlots; "
                  "print(usable_cpus(), RunSlots().size)")


def make_cgroup() -> tuple[Path, Path]:
    """A new cgroup with a one-CPU quota: (its folder, its cgroup.procs)."""
    if os.geteuid() != 0:
        pytest.skip("making a cgroup needs root")
    name = f"celery-probe-test-{uuid.uuid4().hex[:8]}"
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # v2
        if "cpu" not in (CGROUP_ROOT / "cgroup.subtree_control").read_text().split():
            pytest.skip("cgroup v2 without the cpu controller enabled at the root")
        folder = CGROUP_ROOT / name
        folder.mkdir()
        (folder / "cpu.max").write_text(f"{QUOTA} {PERIOD}")
        return folder, folder / "cgroup.procs"
    mount = next((CGROUP_ROOT / m for m in CGROUP_V1_CPU if (CGROUP_ROOT / m / "cpu.cfs_quota_us").exists()), None)
    if mount is None:
        pytest.skip("no cgroup v1 cpu controller mounted")
    folder = mount / name
    try:
        folder.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a cgroup: {exc}")
    (folder / "cpu.cfs_period_us").write_text(PERIOD)
    (folder / "cpu.cfs_quota_us").write_text(QUOTA)
    return folder, folder / "cgroup.procs"


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs 2 CPUs or more, to tell a one-CPU quota from the affinity")
def test_a_one_cpu_quota_gives_serve_two_run_slots_whatever_the_host_has():
    folder, procs = make_cgroup()
    try:
        # The shell joins the cgroup, then becomes the Python that reads its CPUs.
        done = subprocess.run(["sh", "-c", f'echo $$ > "{procs}" && exec "$0" -c "$1"', sys.executable, PRINT_DEFAULTS],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["1", "2"], done.stdout
        outside = subprocess.run([sys.executable, "-c", PRINT_DEFAULTS], capture_output=True, text=True, timeout=60,
                                 check=True)
        cpus = len(os.sched_getaffinity(0))
        assert outside.stdout.split() == [str(cpus), str(2 * cpus)], outside.stdout
    finally:
        folder.rmdir()  # its only process has exited
