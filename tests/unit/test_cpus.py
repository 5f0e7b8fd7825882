"""The CPUs a process may use: cgroup CPU quotas read from v2's cpu.max and v1's cfs files.

The folders here are laid out as the kernel lays them out; tests/integration/test_cgroup_cpus.py
puts a real process into a real cgroup with a quota.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from celery_probe.run.cpus import cgroup_quota_cpus, parse_cpu_max, quota_cpus, usable_cpus


@pytest.mark.parametrize(("text", "cpus"), [
    ("max 100000\n", None),
    ("100000 100000\n", 1),
    ("150000 100000\n", 2),  # 1.5 CPUs: runs may use two, part of the time
    ("50000 100000\n", 1),
    ("400000 100000\n", 4),
    ("", None),
    ("garbage\n", None),
    ("x 100000\n", None),
])
def test_cpu_max(text, cpus):
    assert parse_cpu_max(text) == cpus


def test_v1_says_minus_one_for_no_quota():
    assert quota_cpus(-1, 100000) is None
    assert quota_cpus(250000, 100000) == 3


# (case, files under the test folder, /proc/self/cgroup, CPUs); "cgroup/" is the mount
TREES = [
    ("v2: the smallest quota from the process's cgroup up to the root",
     {"cgroup/kubepods/cpu.max": "400000 100000\n", "cgroup/kubepods/pod1/cpu.max": "200000 100000\n",
      "cgroup/kubepods/pod1/serve/cpu.max": "max 100000\n"},
     "0::/kubepods/pod1/serve\n", 2),
    ("v2 inside a cgroup namespace: the mount itself",
     {"cgroup/cpu.max": "100000 100000\n"}, "0::/\n", 1),
    ("v1: a container's mount, the host's path: up to the mount's own quota",
     {"cgroup/cpu,cpuacct/cpu.cfs_quota_us": "300000\n", "cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
     "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n", 3),
    ("a path above the namespace's root: the mount only, never a folder outside it",
     {"cgroup/cpu.max": "200000 100000\n", "cpu.max": "100000 100000\n"}, "0::/../..\n", 2),
    ("v1 without a quota",
     {"cgroup/cpu/cpu.cfs_quota_us": "-1\n", "cgroup/cpu/cpu.cfs_period_us": "100000\n"}, "4:cpu:/\n", None),
]


@pytest.mark.parametrize(("files", "proc_cgroup", "cpus"), [case[1:] for case in TREES],
                         ids=[case[0] for case in TREES])
def test_cgroup_quota(tmp_path: Path, files: dict[str, str], proc_cgroup: str, cpus: int | None):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "proc-cgroup").write_text(proc_cgroup)
    assert cgroup_quota_cpus(tmp_path / "proc-cgroup", tmp_path / "cgroup") == cpus


def test_no_proc_cgroup_to_read(tmp_path):
    assert cgroup_quota_cpus(tmp_path / "absent", tmp_path) is None


def test_usable_cpus_is_at_least_one_and_at_most_the_affinity():
    import os

    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))
