"""Virtualised files against LXCFS, the oracle, for the same real podman container; both read
from inside it. Where LXCFS 5.0.3 is wrong the file is checked against the kernel's own
accounting instead, and the test says so.

Tolerances: moving counters are read seconds apart, by readers (podman exec) whose own memory and
CPU time are charged to the container while they run: memory ±4 MiB, cpu user/system ±20 ticks,
idle ±300 ticks (host idle grows 100 ticks a second per CPU), uptime ±1 s; host-wide lines both
pass through (±20% or 64 MiB on this shared machine)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import containers
from tests.integration.containers_util import pidns_mounts
from tests.integration.runtime_util import pidns

pytestmark = [
    pytest.mark.root,
    pytest.mark.fuse,
    pytest.mark.skipif(containers.missing() is not None, reason=str(containers.missing())),
]

LIMITED = ("--memory", "64m", "--memory-swap", "128m", "--cpuset-cpus", "0", "--cpus", "0.5")
MEM_EXACT = (
    "MemTotal",
    "SwapTotal",
    "SwapFree",
    "Buffers",
    "SwapCached",
    "Slab",
    "SReclaimable",
    "SUnreclaim",
    "ShmemHugePages",
    "ShmemPmdMapped",
    "Unevictable",
)
MEM_CGROUP = (
    "MemFree",
    "MemAvailable",
    "Cached",
    "Active",
    "Inactive",
    "Active(anon)",
    "Inactive(anon)",
    "Active(file)",
    "Inactive(file)",
    "AnonPages",
    "Mapped",
    "Shmem",
    "Dirty",
    "Writeback",
)


class Setup:
    def __init__(self, name: str, pid: int, lx: Path, px: Path, view: Path) -> None:
        self.name, self.pid, self.lx, self.px, self.view = name, pid, lx, px, view

    def lxcfs(self, rel: str) -> str:
        return containers.inside(self.name, "cat", f"/lx/{rel}")

    def ours(self, rel: str) -> str:
        return containers.inside(self.name, "cat", f"/px/{rel}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("oracle")
    # where every user can reach it (pytest's own directories are root's alone)
    px = Path(tempfile.mkdtemp(prefix="pidns-lxcfs-"))
    px.chmod(0o755)
    view = work / "view"
    view.mkdir()
    with contextlib.ExitStack() as stack:
        image = stack.enter_context(containers.busybox_image(work))
        lx = stack.enter_context(containers.lxcfs(work / "lx"))
        out = pidns("lxcfs", str(px))
        assert out.returncode == 0, out.stderr
        stack.callback(px.rmdir)
        stack.callback(pidns, "umount", str(px))
        name, pid = stack.enter_context(
            containers.container(image, *LIMITED, "-v", f"{lx}:/lx:ro", "-v", f"{px}:/px:ro")
        )
        out = pidns("mount", f"@{pid}", str(view), "--virtualize")
        assert out.returncode == 0, out.stderr
        stack.callback(pidns, "umount", str(view))
        yield Setup(name, pid, lx, px, view)


def meminfo(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        out[key] = int(rest.split()[0])
    return out


def _cgroup_file(pid: int, controller: str, name: str) -> str:
    path = Path(f"/proc/{pid}/cgroup").read_text()
    rel = next(ln.split(":", 2)[2] for ln in path.splitlines() if ln.split(":")[1] == controller)
    return Path(f"/sys/fs/cgroup/{controller}{rel}/{name}").read_text()


def test_meminfo_agrees_with_lxcfs_field_by_field(setup: Setup) -> None:
    lx = meminfo(setup.lxcfs("proc/meminfo"))
    host = meminfo(Path("/proc/meminfo").read_text())
    sources = [setup.ours("proc/meminfo"), (setup.view / "meminfo").read_text()]
    after = meminfo(Path("/proc/meminfo").read_text())
    for source in sources:
        ours = meminfo(source)
        assert list(ours) == list(lx)  # the same lines, in the kernel's order
        assert ours["MemTotal"] == 65536
        for key in MEM_EXACT:
            assert ours[key] == lx[key], key
        for key in MEM_CGROUP:
            assert abs(ours[key] - lx[key]) <= 4096, (key, ours[key], lx[key])
        for key in set(ours) - set(MEM_EXACT) - set(MEM_CGROUP) - {"AnonHugePages"}:
            # the host's own lines, passed through by both: on a busy host they move between
            # reads (Committed_AS by hundreds of MB), so each is held against the host's readings
            # taken around ours as well as against LXCFS's
            low, high = min(host[key], after[key], lx[key]), max(host[key], after[key], lx[key])
            slack = max(65536, high // 5)
            if key == "Committed_AS":  # read while `podman exec` runs: its own charge is in it
                slack += 512 * 1024
            assert low - slack <= ours[key] <= high + slack, (key, ours[key], low, high)
        # LXCFS 5.0.3 always shows AnonHugePages 0 on v1 (its prefix match of total_rss takes
        # total_rss_huge's line): ours is the kernel's total_rss_huge
        stat = dict(
            line.split() for line in _cgroup_file(setup.pid, "memory", "memory.stat").splitlines()
        )
        assert abs(ours["AnonHugePages"] - int(stat["total_rss_huge"]) // 1024) <= 2048
        assert lx["AnonHugePages"] == 0


def test_free_and_top_inside_report_the_limit(setup: Setup, tmp_path: Path) -> None:
    """The LXCFS setup (bind its files over /proc's) unchanged, with pidns lxcfs behind it."""
    binds = [
        f"-v={setup.px}/proc/{f}:/proc/{f}:ro" for f in ("meminfo", "cpuinfo", "stat", "uptime")
    ]
    image = containers.podman("inspect", "--format", "{{.ImageName}}", setup.name).strip()
    with containers.container(image, "--memory", "64m", "--cpuset-cpus", "0", *binds) as (n, _):
        # busybox free takes total/used/free from sysinfo(2), which no FUSE file changes (the
        # time namespace of `pidns run --virtualize` is what fixes uptime there); its
        # "available" column is /proc/meminfo's MemAvailable: the limit's
        free = containers.inside(n, "free").splitlines()
        assert free[1].split()[0] == "Mem:" and int(free[1].split()[-1]) <= 65536
        top = containers.inside(n, "top", "-b", "-n1").splitlines()
        used, free_kb = re.findall(r"(\d+)K", top[0])[:2]
        assert int(used) + int(free_kb) == 65536  # busybox top: Mem: used, free, …
        assert containers.inside(n, "grep", "-c", "^processor", "/proc/cpuinfo").strip() == "1"
        # nproc asks the scheduler (sched_getaffinity), not /proc: the cpuset makes it 1 anyway
        assert containers.inside(n, "nproc").strip() == "1"
        uptime = float(containers.inside(n, "cat", "/proc/uptime").split()[0])
        assert uptime < 60


def test_psutil_and_htop_inside_report_the_limits(setup: Setup) -> None:
    """psutil and htop (the host's, bound in read-only: the image is busybox only) inside a
    container with the LXCFS setup's binds from `pidns lxcfs`, `online` included: glibc's CPU
    count, which psutil's is, reads /sys/devices/system/cpu/online."""
    if shutil.which("htop") is None or shutil.which("tmux") is None:
        pytest.skip("needs htop and tmux (scripts/bootstrap.sh installs them)")
    online = "sys/devices/system/cpu/online"
    binds = [f"-v={setup.px}/proc/{f}:/proc/{f}:ro" for f in ("meminfo", "cpuinfo", "stat")]
    binds += [f"-v={setup.px}/{online}:/{online}:ro"]
    binds += [f"-v={path}:{path}:ro" for path in pidns_mounts()]
    image = containers.podman("inspect", "--format", "{{.ImageName}}", setup.name).strip()
    flags = ("--memory", "64m", "--cpuset-cpus", "0", "-e", "TERM=xterm", *binds)
    with containers.container(image, *flags) as (n, _):
        probe = "import psutil; print(psutil.virtual_memory().total, psutil.cpu_count())"
        assert containers.inside(n, sys.executable, "-c", probe).split() == ["67108864", "1"]
        tmux = ("tmux", "-L", "pidns-test")
        containers.inside(n, *tmux, "new-session", "-d", "-x", "160", "-y", "30", "htop")
        deadline = time.monotonic() + 20
        screen = ""
        while time.monotonic() < deadline and "Mem[" not in screen:
            time.sleep(0.5)
            screen = containers.inside(n, *tmux, "capture-pane", "-p")
        # htop's memory meter: used/total, the total being the limit
        assert re.search(r"Mem\[[^]]*/64\.0M\]", screen), screen


def test_cpuinfo_and_online_agree_with_lxcfs(setup: Setup) -> None:
    def steady(text: str) -> list[str]:
        return [ln for ln in text.splitlines() if not ln.startswith(("cpu MHz", "bogomips"))]

    lx = setup.lxcfs("proc/cpuinfo")
    assert steady(setup.ours("proc/cpuinfo")) == steady(lx)
    assert steady((setup.view / "cpuinfo").read_text()) == steady(lx)
    assert lx.count("processor\t:") == 1
    online = "sys/devices/system/cpu/online"
    assert setup.ours(online) == setup.lxcfs(online) == "0\n"


def _stat(text: str) -> dict[str, list[int]]:
    return {ln.split()[0]: [int(w) for w in ln.split()[1:]] for ln in text.splitlines()}


def test_stat_cpu_lines_agree_with_lxcfs_and_task_counts_are_the_namespaces(setup: Setup) -> None:
    lx = _stat(setup.lxcfs("proc/stat"))
    ours = _stat(setup.ours("proc/stat"))
    assert list(ours) == list(lx)
    for cpu in (k for k in ours if k.startswith("cpu")):
        user, nice, system, idle, *rest = ours[cpu]
        assert abs(user - lx[cpu][0]) <= 20 and abs(system - lx[cpu][2]) <= 20
        assert abs(idle - lx[cpu][3]) <= 300
        assert nice == 0 and rest == [0] * 6 == lx[cpu][4:]
    assert ours["btime"] == lx["btime"]
    # LXCFS shows the host's processes/procs_running/procs_blocked; ours are the namespace's:
    # forks counted by the pids it allocated, and at most its own tasks running
    last = int(containers.inside(setup.name, "cat", "/proc/sys/kernel/ns_last_pid"))
    assert 1 <= ours["processes"][0] <= last  # podman exec allocates pids between the reads
    assert ours["processes"][0] < lx["processes"][0]
    assert ours["procs_running"][0] <= 2 and ours["procs_blocked"][0] <= 1


def test_uptime_loadavg_swaps_agree_with_lxcfs(setup: Setup) -> None:
    lx = [float(w) for w in setup.lxcfs("proc/uptime").split()]
    ours = [float(w) for w in setup.ours("proc/uptime").split()]
    assert abs(ours[0] - lx[0]) <= 1 and abs(ours[1] - lx[1]) <= 1  # one CPU: LXCFS's idle too
    # LXCFS started without -l shows the host's loadavg; ours counts the container's tasks
    load = setup.ours("proc/loadavg").split()
    running, total = (int(n) for n in load[3].split("/"))
    assert 1 <= total <= 3 and running <= total
    lx_swaps, our_swaps = setup.lxcfs("proc/swaps"), setup.ours("proc/swaps")
    assert our_swaps.split() == lx_swaps.split()  # the host has no swap: header only, both


def test_diskstats_is_the_cgroups_io_accounting(setup: Setup) -> None:
    """LXCFS 5.0.3 reads only CFQ's blkio files, which kernels since 5.0 lack: it shows the
    host's diskstats. Ours is checked against the kernel's blkio.throttle accounting."""
    containers.inside(setup.name, "dd", "if=/dev/zero", "of=/tmp/x", "bs=64k", "count=16")
    containers.inside(setup.name, "sync")
    ours = setup.ours("proc/diskstats")
    serviced = _cgroup_file(setup.pid, "blkio", "blkio.throttle.io_serviced_recursive")
    counts: dict[str, dict[str, int]] = {}
    for line in serviced.splitlines():
        words = line.split()
        if len(words) == 3:
            counts.setdefault(words[0], {})[words[1]] = int(words[2])
    for line in ours.splitlines():
        w = line.split()
        dev = f"{w[0]}:{w[1]}"
        assert int(w[3]) == counts[dev].get("Read", 0) or abs(int(w[3]) - counts[dev]["Read"]) < 5
        assert abs(int(w[7]) - counts[dev].get("Write", 0)) < 50
        assert len(w) == 20  # the kernel's layout (LXCFS drops discards completed)
    host_devices = {ln.split()[2] for ln in Path("/proc/diskstats").read_text().splitlines()}
    assert {ln.split()[2] for ln in setup.lxcfs("proc/diskstats").splitlines()} == host_devices


def test_pressure_is_the_cgroups(setup: Setup) -> None:
    rel = next(
        ln.split(":", 2)[2]
        for ln in Path(f"/proc/{setup.pid}/cgroup").read_text().splitlines()
        if ln.startswith("0::")
    )
    for resource in ("cpu", "memory", "io"):
        kernel = Path(f"/sys/fs/cgroup/unified{rel}/{resource}.pressure").read_text()
        ours = (setup.view / "pressure" / resource).read_text()
        # totals only grow: ours, read after the kernel's, is not behind it, and avg lines match
        k_total = int(kernel.split("total=")[1].split()[0])
        o_total = int(ours.split("total=")[1].split()[0])
        assert ours.startswith("some ") and o_total >= k_total
        assert o_total - k_total < 5_000_000  # under 5 s of stall between the two reads


def test_exec_virtualize_shows_the_containers_limits(setup: Setup) -> None:
    out = pidns("exec", "--ns", f"@{setup.pid}", "--virtualize", "--", "cat", "/proc/meminfo")
    assert out.returncode == 0, out.stderr
    assert meminfo(out.stdout)["MemTotal"] == 65536
    quota = pidns(
        "exec",
        "--ns",
        f"@{setup.pid}",
        "--virtualize",
        "--cpus-from-quota",
        "--",
        "cat",
        "/proc/cpuinfo",
    )
    assert quota.stdout.count("processor\t:") == 1  # ceil(0.5) = 1, within the cpuset


def test_virtualize_refuses_a_namespace_without_a_cgroup_of_its_own(tmp_path: Path) -> None:
    out = pidns("mount", "host", str(tmp_path), "--virtualize")
    assert out.returncode == 2
    assert out.stderr.startswith("pidns: error: ") and "no cgroup of its own" in out.stderr
    assert "Traceback" not in out.stderr
    assert not os.path.ismount(tmp_path)


def test_lxcfs_on_a_busy_mountpoint_fails_cleanly(setup: Setup) -> None:
    out = pidns("lxcfs", str(setup.px))
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "already a view" in out.stderr or "busy" in out.stderr
    assert "Traceback" not in out.stderr


def test_lxcfs_is_readable_by_other_users(setup: Setup) -> None:
    out = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "cat",
            f"{setup.px}/proc/meminfo",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("MemTotal:")
