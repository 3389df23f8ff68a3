"""Fixture cgroup trees, v1 (one hierarchy per controller) and v2 (one unified hierarchy), laid
out as the kernel lays them out, with the files' texts in the kernel's formats. This machine
gives no v2 controllers, so the v2 code paths are tested on these."""

from __future__ import annotations

from pathlib import Path

from pidns.cgroups.layout import Cgroup, Mount, System, parse_mountinfo

CONTAINER = "/libpod_parent/libpod-abc"


def write(base: Path, rel: str, files: dict[str, str]) -> None:
    d = base / rel.lstrip("/")
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


V1_STAT = "\n".join(
    [
        "cache 8192",
        "rss 53248",
        "total_cache 1048576",
        "total_rss 2097152",
        "total_rss_huge 2097152",
        "total_shmem 4096",
        "total_mapped_file 8192",
        "total_dirty 4096",
        "total_writeback 0",
        "total_inactive_anon 1048576",
        "total_active_anon 1056768",
        "total_inactive_file 524288",
        "total_active_file 524288",
        "total_unevictable 0",
        "",
    ]
)

V2_STAT = "\n".join(
    [
        "anon 2097152",
        "file 1048576",
        "file_mapped 8192",
        "file_dirty 4096",
        "file_writeback 0",
        "shmem 4096",
        "anon_thp 2097152",
        "inactive_anon 1048576",
        "active_anon 1056768",
        "inactive_file 524288",
        "active_file 524288",
        "unevictable 0",
        "",
    ]
)


def v1_tree(base: Path, memsw: bool = True) -> Cgroup:
    """Hierarchies at base/{memory,cpu,...}: a container of 64 MiB under a 128 MiB parent, memsw
    (memory + swap) 96 MiB, 1.5 CPUs of quota, a cpuset inherited from its parent (0,2)."""
    lines = []
    for i, c in enumerate(("memory", "cpu", "cpuacct", "cpuset", "blkio", "pids"), 1):
        lines.append(f"{30 + i} 20 0:{30 + i} / {base}/{c} rw - cgroup cgroup rw,{c}")
    mounts = parse_mountinfo("\n".join(lines).encode())
    write(base, "memory", {"memory.limit_in_bytes": "9223372036854771712\n"})
    write(base, "memory/libpod_parent", {"memory.limit_in_bytes": "134217728\n"})
    mem = {
        "memory.limit_in_bytes": "67108864\n",
        "memory.usage_in_bytes": "4194304\n",
        "memory.swappiness": "60\n",
        "memory.stat": V1_STAT,
    }
    if memsw:
        mem |= {
            "memory.memsw.limit_in_bytes": "100663296\n",
            "memory.memsw.usage_in_bytes": "5242880\n",
        }
    write(base, f"memory{CONTAINER}", mem)
    write(
        base,
        f"cpu{CONTAINER}",
        {"cpu.cfs_quota_us": "150000\n", "cpu.cfs_period_us": "100000\n"},
    )
    write(base, "cpu/libpod_parent", {"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n"})
    write(
        base,
        f"cpuacct{CONTAINER}",
        {
            "cpuacct.usage_all": "cpu user system\n0 1000000000 500000000\n1 0 0\n2 30000000 10000000\n"
        },
    )
    write(base, "cpuset", {"cpuset.effective_cpus": "0-3\n"})
    write(base, "cpuset/libpod_parent", {"cpuset.effective_cpus": "0,2\n"})
    write(base, f"cpuset{CONTAINER}", {"cpuset.effective_cpus": "\n", "cpuset.cpus": "\n"})
    write(
        base,
        f"blkio{CONTAINER}",
        {
            "blkio.throttle.io_serviced_recursive": "8:0 Read 10\n8:0 Write 20\n8:0 Sync 30\n"
            "8:0 Async 0\n8:0 Discard 0\n8:0 Total 30\n8:16 Read 0\n8:16 Write 0\nTotal 30\n",
            "blkio.throttle.io_service_bytes_recursive": "8:0 Read 40960\n8:0 Write 81920\n"
            "8:0 Discard 0\n8:0 Total 122880\nTotal 122880\n",
        },
    )
    write(base, f"pids{CONTAINER}", {"pids.max": "100\n", "pids.current": "3\n"})
    write(base, "pids/libpod_parent", {"pids.max": "max\n"})
    text = "".join(
        f"{i}:{c}:{CONTAINER}\n"
        for i, c in enumerate(("memory", "cpu", "cpuacct", "cpuset", "blkio", "pids"), 1)
    )
    return System.from_mounts(mounts).of_text(text.encode())


def v2_tree(base: Path, controllers: str = "cpuset cpu io memory pids") -> Cgroup:
    mounts = [Mount("/", str(base), True, frozenset(controllers.split()))]
    write(base, "", {"cgroup.controllers": controllers + "\n"})
    write(
        base,
        "libpod_parent",
        {
            "memory.max": "134217728\n",
            "memory.swap.max": "max\n",
            "cpu.max": "max 100000\n",
            "pids.max": "50\n",
        },
    )
    write(
        base,
        CONTAINER,
        {
            "memory.max": "67108864\n",
            "memory.current": "4194304\n",
            "memory.swap.max": "33554432\n",
            "memory.swap.current": "1048576\n",
            "memory.stat": V2_STAT,
            "cpu.max": "50000 100000\n",
            "cpu.stat": "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n",
            "cpuset.cpus.effective": "1\n",
            "io.stat": "8:0 rbytes=40960 wbytes=81920 rios=10 wios=20 dbytes=0 dios=0\n",
            "cpu.pressure": "some avg10=1.00 avg60=0.50 avg300=0.10 total=12345\n"
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=6789\n",
            "memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            "pids.max": "max\n",
            "pids.current": "3\n",
        },
    )
    return System.from_mounts(mounts).of_text(f"0::{CONTAINER}\n".encode())
