"""The virtualised-file renderers over fixture cgroup trees, v1 and v2 (v2 only here: this
machine's v2 hierarchy has no controllers)."""

from __future__ import annotations

from pathlib import Path

from pidns.cgroups import cpu, io, memory
from pidns.view.files.cpuinfo import render_cpuinfo, render_online, visible_cpus
from pidns.view.files.diskstats import render_diskstats
from pidns.view.files.meminfo import render_meminfo, render_swaps
from pidns.view.files.procstat import TaskCounts, render_proc_stat
from pidns.view.files.uptime import render_uptime
from tests.unit.cgroup_trees import v1_tree, v2_tree

HOST_MEMINFO = (
    b"MemTotal:       24684084 kB\nMemFree:        20000000 kB\nMemAvailable:   23000000 kB\n"
    b"Buffers:           57456 kB\nCached:          2805092 kB\nSwapCached:            0 kB\n"
    b"Active:          1114876 kB\nInactive:        2165368 kB\nMlocked:           19076 kB\n"
    b"SwapTotal:       1048576 kB\nSwapFree:        1048576 kB\nDirty:            153180 kB\n"
    b"Mapped:           100000 kB\nShmem:              9000 kB\nAnonHugePages:     4096 kB\n"
    b"HugePages_Total:       0\n"
)


def _kb(text: bytes) -> dict[str, int]:
    return {
        line.split(b":")[0].decode(): int(line.split()[1]) for line in text.splitlines() if line
    }


def test_meminfo_v1_and_v2_show_the_limit_and_the_cgroups_use(tmp_path: Path) -> None:
    for cg in (v1_tree(tmp_path / "v1"), v2_tree(tmp_path / "v2")):
        out = render_meminfo(HOST_MEMINFO, memory.memory(cg))
        got = _kb(out)
        assert got["MemTotal"] == 65536 and got["MemFree"] == 65536 - 4096
        assert got["MemAvailable"] == 65536 - 4096 + 1024 and got["Cached"] == 1024
        assert got["Buffers"] == 0 and got["Mlocked"] == 19076  # no cgroup figure: the host's
        assert got["SwapTotal"] == 32768 and got["SwapFree"] == 32768 - 1024
        assert got["Mapped"] == 8 and got["Dirty"] == 4 and got["AnonHugePages"] == 2048
        assert got["HugePages_Total"] == 0 and list(got) == list(_kb(HOST_MEMINFO))
        assert b"MemTotal:          65536 kB\n" in out  # the kernel's column widths


def test_meminfo_clamps_to_the_host_and_swappiness_0_means_no_swap(tmp_path: Path) -> None:
    cg = v1_tree(tmp_path)
    small_host = HOST_MEMINFO.replace(b"24684084", b"32768").replace(b"1048576", b"16384")
    got = _kb(render_meminfo(small_host, memory.memory(cg)))
    assert got["MemTotal"] == 32768 and got["SwapTotal"] == 16384
    (tmp_path / "memory/libpod_parent/libpod-abc/memory.swappiness").write_text("0\n")
    got = _kb(render_meminfo(HOST_MEMINFO, memory.memory(cg)))
    assert got["SwapTotal"] == 1024 and got["SwapFree"] == 0
    assert render_meminfo(HOST_MEMINFO, None) == HOST_MEMINFO


def test_swaps_lists_the_cgroups_swap(tmp_path: Path) -> None:
    header = b"Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
    out = render_swaps(
        header + b"/dev/vdb partition 1048576 0 -2\n",
        HOST_MEMINFO,
        memory.memory(v2_tree(tmp_path)),
    )
    lines = out.splitlines()
    assert lines[0] + b"\n" == header and lines[1].split() == [
        b"none",
        b"virtual",
        b"32768",
        b"1024",
        b"0",
    ]
    no_swap = HOST_MEMINFO.replace(b"SwapTotal:       1048576", b"SwapTotal:             0")
    assert render_swaps(header, no_swap, memory.memory(v2_tree(tmp_path))) == header


CPUINFO = b"".join(
    b"processor\t: %d\nvendor_id\t: X\ncore id\t\t: %d\n\n" % (n, n) for n in range(4)
)


def test_cpuinfo_shows_the_cpuset_renumbered_and_the_quota_count(tmp_path: Path) -> None:
    cg = v1_tree(tmp_path)
    cpus = cpu.cpuset(cg)
    assert cpus == (0, 2)
    out = render_cpuinfo(CPUINFO, cpus)
    assert out.count(b"processor") == 2 and b"processor\t: 1\ncore id" not in out
    assert b"processor\t: 1\nvendor_id\t: X\ncore id\t\t: 2\n" in out  # host cpu 2, shown as 1
    assert visible_cpus((0, 2), cpu.quota(cg), True) == (0, 2)  # ceil(1.5) = 2
    assert visible_cpus((0, 1, 2, 3), cpu.Quota(50000, 100000), True) == (0,)
    assert render_online(b"0-3\n", (0, 2), False) == b"0,2\n"
    assert render_online(b"0-3\n", (0, 2), True) == b"0-1\n"


HOST_STAT = (
    b"cpu  400 10 200 10000 5 0 3 0 0 0\n"
    b"cpu0 100 5 50 2500 1 0 1 0 0 0\n"
    b"cpu1 100 0 50 2500 1 0 1 0 0 0\n"
    b"cpu2 100 5 50 2500 2 0 1 0 0 0\n"
    b"cpu3 100 0 50 2500 1 0 0 0 0 0\n"
    b"intr 1 2 3\nctxt 99\nbtime 1700000000\nprocesses 5000\nprocs_running 7\nprocs_blocked 2\n"
    b"softirq 1 2\n"
)


def test_stat_v1_per_cpu_time_and_idle(tmp_path: Path) -> None:
    cg = v1_tree(tmp_path)
    out = render_proc_stat(HOST_STAT, (0, 2), cpu.cpu_time(cg), 100, TaskCounts(40, 1, 0))
    lines = out.splitlines()
    # cpu0: the cgroup used 1 s user + 0.5 s system = 100 + 50 ticks; the host used 157 there,
    # so 7 ticks of others' use count as idle to it
    assert lines[1] == b"cpu0 100 0 50 2507 0 0 0 0 0 0"
    assert lines[2] == b"cpu2 3 0 1 2654 0 0 0 0 0 0"  # host 158 used, the cgroup 4
    assert lines[0].split()[1:4] == [b"103", b"0", b"51"]
    assert b"processes 40\n" in out and b"procs_running 1\n" in out and b"procs_blocked 0\n" in out
    assert b"btime 1700000000\n" in out and b"ctxt 99\n" in out
    renumbered = render_proc_stat(HOST_STAT, (2,), None, 100, None, renumber=True)
    assert renumbered.splitlines()[1] == b"cpu0 100 5 50 2500 2 0 1 0 0 0"
    assert b"processes 5000\n" in renumbered  # no namespace: the host's


def test_stat_v2_shares_the_totals_among_its_cpus(tmp_path: Path) -> None:
    cg = v2_tree(tmp_path)
    out = render_proc_stat(HOST_STAT, (1, 3), cpu.cpu_time(cg), 100, None)
    lines = out.splitlines()
    assert lines[1].split()[:4] == [b"cpu1", b"50", b"0", b"25"]
    assert lines[0].split()[1:4] == [b"100", b"0", b"50"]


def test_diskstats_in_the_kernels_layout(tmp_path: Path) -> None:
    host = b"   8       0 sda 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n   8      16 sdb 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
    for cg in (v1_tree(tmp_path / "v1"), v2_tree(tmp_path / "v2")):
        out = render_diskstats(host, io.disk_io(cg))
        assert out.splitlines() == [
            b"   8       0 sda 10 0 80 0 20 0 160 0 0 0 0 0 0 0 0 0 0"
        ]  # 40960 bytes read = 80 sectors; sdb untouched by the cgroup: left out
    assert render_diskstats(host, None) == host


def test_uptime_counts_idle_over_the_cgroups_cpus() -> None:
    assert render_uptime(b"1000.00 1800.00\n", 10.0, 4.0, 2) == b"10.00 16.00\n"
    assert render_uptime(b"1000.00 1800.00\n", 10.0, None, 2) == b"10.00 1800.00\n"
