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


def write(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".", 1)).write_text(text)


def test_v2_the_smallest_quota_from_the_process_cgroup_up_to_the_root(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "kubepods", cpu_max="400000 100000\n")
    write(root / "kubepods" / "pod1", cpu_max="200000 100000\n")
    write(root / "kubepods" / "pod1" / "serve", cpu_max="max 100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/kubepods/pod1/serve\n")
    assert cgroup_quota_cpus(proc, root) == 2


def test_v2_inside_a_cgroup_namespace_reads_the_mount_itself(tmp_path):
    root = tmp_path / "cgroup"
    write(root, cpu_max="100000 100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/\n")
    assert cgroup_quota_cpus(proc, root) == 1


def test_v1_a_container_mount_with_the_hosts_path_walks_up_to_its_own_quota(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "cpu,cpuacct", cpu_cfs_quota_us="300000\n", cpu_cfs_period_us="100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    assert cgroup_quota_cpus(proc, root) == 3


def test_a_path_above_the_namespace_root_reads_the_mount_only(tmp_path):
    root = tmp_path / "cgroup"
    write(root, cpu_max="200000 100000\n")
    write(tmp_path, cpu_max="100000 100000\n")  # outside the mount: never read
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/../..\n")
    assert cgroup_quota_cpus(proc, root) == 2


def test_no_quota_anywhere_or_nothing_to_read(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "cpu", cpu_cfs_quota_us="-1\n", cpu_cfs_period_us="100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("4:cpu:/\n")
    assert cgroup_quota_cpus(proc, root) is None
    assert cgroup_quota_cpus(tmp_path / "absent", root) is None


def test_usable_cpus_is_at_least_one_and_at_most_the_affinity():
    import os

    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))
