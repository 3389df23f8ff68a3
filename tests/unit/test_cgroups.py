"""The cgroup readers over fixture trees, v1 and v2 (this machine's v2 hierarchy has no
controllers, so v2 is tested here only), and over this machine's real v1 tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pidns.cgroups import cpu, io, layout, memory, pids, psi
from tests.unit.cgroup_trees import CONTAINER, v1_tree, v2_tree

MiB = 1 << 20


def test_proc_cgroup_and_mountinfo_parse_as_the_kernel_prints_them() -> None:
    text = b"9:name=systemd:/a\n4:memory:/x/y\n2:cpu,cpuacct:/z\n0::/u\n"
    assert layout.parse_proc_cgroup(text) == {
        "name=systemd": "/a",
        "memory": "/x/y",
        "cpu": "/z",
        "cpuacct": "/z",
        "unified": "/u",
    }
    info = (
        b"32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        b"41 31 0:38 /lxc/c1 /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
        b"50 31 0:40 / /mnt/with\\040space rw - cgroup cgroup rw,memory\n"
        b"22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
    )
    mounts = layout.parse_mountinfo(info)
    assert [(m.mountpoint, m.v2, sorted(m.controllers)) for m in mounts] == [
        ("/sys/fs/cgroup/cpu,cpuacct", False, ["cpu", "cpuacct"]),
        ("/sys/fs/cgroup/unified", True, []),
        ("/mnt/with space", False, ["memory"]),
    ]
    # a path outside a mount's root (a cgroup namespace's mount) has no directory there
    cg = layout.locate({"unified": "/lxc/c1/sub", "memory": "/m"}, mounts)
    assert cg.unified is not None and cg.unified.path == "/sys/fs/cgroup/unified/sub"
    assert layout.locate({"unified": "/other"}, mounts).unified is None
    assert cg.dirs["memory"].path == "/mnt/with space/m"


def test_v1_memory_takes_the_smallest_limit_on_the_path(tmp_path: Path) -> None:
    cg = v1_tree(tmp_path)
    m = memory.memory(cg)
    assert m is not None and not m.v2
    assert m.limit == 64 * MiB and m.usage == 4 * MiB
    assert m.swap_limit == 96 * MiB and m.swap_total == 32 * MiB and m.swap_used == 1 * MiB
    assert m.swappiness == 60
    assert m.get("cache") == MiB and m.get("rss_huge") == 2 * MiB
    # the parent's limit binds when it is the smaller one
    (tmp_path / "memory/libpod_parent/memory.limit_in_bytes").write_text("33554432\n")
    assert memory.memory(cg).limit == 32 * MiB  # type: ignore[union-attr]
    # where memory.stat has the kernel's own minimum over the path, that is the limit
    stat = tmp_path / f"memory{CONTAINER}/memory.stat"
    stat.write_text(
        stat.read_text() + "hierarchical_memory_limit 16777216\nhierarchical_memsw_limit 33554432\n"
    )
    m3 = memory.memory(cg)
    assert m3 is not None and m3.limit == 16 * MiB and m3.swap_total == 16 * MiB
    # no memsw files (swap accounting off): no swap limit
    other = v1_tree(tmp_path / "nosw", memsw=False)
    m2 = memory.memory(other)
    assert m2 is not None and m2.swap_limit is None and m2.swap_total is None and m2.swap_used == 0


def test_v2_memory_swap_is_swap_alone(tmp_path: Path) -> None:
    m = memory.memory(v2_tree(tmp_path))
    assert m is not None and m.v2
    assert m.limit == 64 * MiB and m.usage == 4 * MiB
    assert m.swap_total == 32 * MiB and m.swap_used == MiB and m.swappiness is None
    assert m.get("cache", "file") == MiB and m.get("mapped_file", "file_mapped") == 8192


def test_limits_parse_no_limit_in_both_spellings() -> None:
    assert memory.parse_limit("max\n") is None
    assert memory.parse_limit("9223372036854771712\n") is None
    assert memory.parse_limit("") is None and memory.parse_limit(None) is None
    assert memory.parse_limit("67108864\n") == 64 * MiB


def test_cpu_lists_round_trip() -> None:
    assert cpu.parse_cpu_list("0-3,8,10-11\n") == (0, 1, 2, 3, 8, 10, 11)
    assert cpu.format_cpu_list([0, 1, 2, 3, 8, 10, 11]) == "0-3,8,10-11"
    assert cpu.format_cpu_list([5]) == "5"
    with pytest.raises(ValueError):
        cpu.parse_cpu_list("3-1")
    with pytest.raises(ValueError):
        cpu.parse_cpu_list("a")


def test_v1_cpus_quota_and_time(tmp_path: Path) -> None:
    cg = v1_tree(tmp_path)
    assert cpu.cpuset(cg) == (0, 2)  # empty in the container: the parent's
    q = cpu.quota(cg)
    assert q is not None and q.cpus == 1.5 and q.whole_cpus == 2
    t = cpu.cpu_time(cg)
    assert t is not None and t.per_cpu == {
        0: (1_000_000_000, 500_000_000),
        1: (0, 0),
        2: (30_000_000, 10_000_000),
    }
    assert t.user_ns == 1_030_000_000 and t.system_ns == 510_000_000
    # without usage_all, usage_percpu: all of it counted as user time
    os.remove(tmp_path / f"cpuacct{CONTAINER}/cpuacct.usage_all")
    (tmp_path / f"cpuacct{CONTAINER}/cpuacct.usage_percpu").write_text("7 8 9 \n")
    t2 = cpu.cpu_time(cg)
    assert t2 is not None and t2.per_cpu == {0: (7, 0), 1: (8, 0), 2: (9, 0)}


def test_v2_cpus_quota_and_time(tmp_path: Path) -> None:
    cg = v2_tree(tmp_path)
    assert cpu.cpuset(cg) == (1,)
    q = cpu.quota(cg)
    assert q is not None and q.cpus == 0.5 and q.whole_cpus == 1
    t = cpu.cpu_time(cg)
    assert t is not None and (t.user_ns, t.system_ns, t.per_cpu) == (10**9, 5 * 10**8, None)


def test_a_tighter_parent_quota_binds(tmp_path: Path) -> None:
    cg = v2_tree(tmp_path)
    (tmp_path / "libpod_parent/cpu.max").write_text("20000 100000\n")
    assert cpu.quota(cg) == cpu.Quota(20000, 100000)


def test_io_v1_throttle_and_v2_io_stat(tmp_path: Path) -> None:
    v1 = io.disk_io(v1_tree(tmp_path / "a"))
    assert v1 is not None
    assert v1[(8, 0)].reads == 10 and v1[(8, 0)].writes == 20
    assert v1[(8, 0)].read_bytes == 40960 and v1[(8, 0)].write_bytes == 81920
    assert not v1[(8, 16)].any()
    v2 = io.disk_io(v2_tree(tmp_path / "b"))
    assert v2 == {(8, 0): io.DiskIo(reads=10, read_bytes=40960, writes=20, write_bytes=81920)}


def test_io_v1_cfq_files_when_the_kernel_has_them(tmp_path: Path) -> None:
    cg = v1_tree(tmp_path)
    d = tmp_path / f"blkio{CONTAINER}"
    (d / "blkio.io_serviced_recursive").write_text("8:0 Read 3\n8:0 Write 4\n8:0 Total 7\n")
    (d / "blkio.io_service_bytes_recursive").write_text("8:0 Read 1024\n8:0 Write 2048\n")
    (d / "blkio.io_merged_recursive").write_text("8:0 Read 1\n8:0 Write 2\n")
    (d / "blkio.io_service_time_recursive").write_text(
        "8:0 Read 5000000\n8:0 Write 7000000\n8:0 Total 12000000\n"
    )
    (d / "blkio.io_wait_time_recursive").write_text("8:0 Read 1000000\n8:0 Write 0\n")
    got = io.disk_io(cg)
    assert got is not None
    assert got[(8, 0)] == io.DiskIo(
        reads=3,
        reads_merged=1,
        read_bytes=1024,
        read_ms=6,
        writes=4,
        writes_merged=2,
        write_bytes=2048,
        write_ms=7,
        io_ms=12,
    )


def test_pressure_and_pids(tmp_path: Path) -> None:
    cg = v2_tree(tmp_path)
    cpu_p = psi.pressure(cg, "cpu")
    assert cpu_p is not None and cpu_p.startswith(b"some avg10=1.00")
    assert psi.pressure(cg, "io") is None  # not in the fixture: no PSI there
    with pytest.raises(ValueError):
        psi.pressure(cg, "disk")
    assert pids.pids(cg) == pids.Pids(50, 3)
    assert pids.pids(v1_tree(tmp_path / "v1")) == pids.Pids(100, 3)


def test_a_cgroup_in_no_hierarchy_reads_as_nothing(tmp_path: Path) -> None:
    empty = layout.Cgroup()
    assert memory.memory(empty) is None and cpu.cpuset(empty) is None
    assert cpu.quota(empty) is None and cpu.cpu_time(empty) is None
    assert io.disk_io(empty) is None and psi.pressure(empty, "cpu") is None
    assert pids.pids(empty) is None and empty.at_root()


@pytest.mark.skipif(
    not os.path.isdir("/sys/fs/cgroup/memory"), reason="needs a v1 memory hierarchy"
)
def test_this_machines_tree_reads_as_its_files_say() -> None:
    system = layout.System()
    cg = system.of_pid(os.getpid())
    m = memory.memory(cg)
    assert m is not None
    d = cg.get("memory")
    assert d is not None
    with open(d.file("memory.usage_in_bytes")) as f:
        assert abs(int(f.read()) - m.usage) < 64 * MiB
    cpus = cpu.cpuset(cg)
    assert cpus is not None and set(cpus) <= set(range(os.cpu_count() or 1))
    assert system.of_pid(1).at_root()
