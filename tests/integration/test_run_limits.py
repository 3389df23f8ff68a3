"""`pidns run --memory/--memory-swap/--cpus/--cpuset/--pids-max/--virtualize/--cpus-from-quota` and `Sandbox(memory=…)` on this
machine's cgroups (v1 controllers, a v2 hierarchy without any: the v2 writing is tested on
fixture trees in tests/unit/test_cgroup_create.py): the limits hold, the command's /proc and
clocks show them, and the cgroup is gone after the run, after a failure and after SIGKILL of the
launcher. Rootless: the clear error without delegation, and a run inside a delegated v2 subtree."""

from __future__ import annotations

import calendar
import contextlib
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.runtime_util import PIDNS, background, pidns
from tests.users import AS_NOBODY, NOBODY, installed_for_users

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        not os.path.isdir("/sys/fs/cgroup/memory"), reason="needs the v1 memory hierarchy"
    ),
]

SYSINFO = (
    "import ctypes, time; b = (ctypes.c_long * 16)(); "
    "assert ctypes.CDLL(None).sysinfo(b) == 0; "
    "print(b[0], time.clock_gettime(time.CLOCK_BOOTTIME), time.time())"
)


def cgroups_inside(out: str) -> list[str]:
    """The directories of a /proc/self/cgroup printed by the command (pidns-made ones only)."""
    dirs = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or "pidns-" not in parts[2]:
            continue
        names = parts[1] or "unified"
        first = names.split(",")[0].removeprefix("name=")
        dirs.append(f"/sys/fs/cgroup/{first}{parts[2]}")
    return dirs


def made_by(pid: int) -> list[str]:
    """Cgroups a launcher with this pid made, wherever they are."""
    return glob.glob(f"/sys/fs/cgroup/*/**/pidns-{pid}-*", recursive=True)


def test_memory_limit_and_virtualized_meminfo() -> None:
    result = pidns(
        "run", "--memory", "64M", "--virtualize", "--", "sh", "-c",
        "cat /proc/meminfo; echo ---; cat /proc/self/cgroup; echo ---; free -k",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    meminfo, cgroup, free = result.stdout.split("---\n")
    assert re.search(r"^MemTotal:\s+65536 kB$", meminfo, re.M), meminfo
    dirs = cgroups_inside(cgroup)
    memory = [d for d in dirs if "/memory/" in d]
    assert memory, cgroup
    assert free.splitlines()[1].split()[1] == "65536"  # procps free reads /proc/meminfo
    for d in dirs:
        assert not os.path.exists(d), f"{d} left behind"


def test_the_limits_are_the_kernels() -> None:
    script = (
        "cat /proc/self/cgroup; echo ---; nproc; grep -c ^processor /proc/cpuinfo; "
        "grep Cpus_allowed_list /proc/self/status"
    )
    result = pidns(
        "run", "--memory", "32M", "--cpus", "0.5", "--cpuset", "0", "--pids-max", "20",
        "--virtualize", "--", "sh", "-c", script,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    cgroup, rest = result.stdout.split("---\n")
    nproc, processors, allowed = rest.splitlines()
    assert nproc == "1"  # nproc asks sched_getaffinity: the cpuset alone limits it
    assert processors == "1"  # the virtualised cpuinfo
    assert allowed.split() == ["Cpus_allowed_list:", "0"]
    dirs = {d.split("/")[4]: d for d in cgroups_inside(cgroup)}
    assert set(dirs) >= {"memory", "cpu", "cpuset", "pids"}, dirs
    for d in dirs.values():
        assert not os.path.exists(d)


def test_limits_written_while_it_runs() -> None:
    """Read the cgroup's files from outside while the command runs."""
    read, write = os.pipe()
    proc = subprocess.Popen(
        [*PIDNS, "run", "--memory", "48M", "--cpus", "0.25", "--pids-max", "7", "--", "sh",
         "-c", f"cat /proc/self/cgroup > /dev/fd/{write}; exec sleep 30"],
        pass_fds=(write,), stdout=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write)
    try:
        text = os.read(read, 65536).decode()
        dirs = {d.split("/")[4]: d for d in cgroups_inside(text)}
        assert dirs, text
        assert Path(dirs["memory"], "memory.limit_in_bytes").read_text().strip() == str(48 << 20)
        assert Path(dirs["cpu"], "cpu.cfs_quota_us").read_text().strip() == "25000"
        assert Path(dirs["cpu"], "cpu.cfs_period_us").read_text().strip() == "100000"
        assert Path(dirs["pids"], "pids.max").read_text().strip() == "7"
        deadline = time.monotonic() + 10
        while True:  # cat may not have exited yet
            tasks = Path(dirs["pids"], "cgroup.procs").read_text().split()
            if len(tasks) <= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert str(proc.pid) not in tasks  # the launcher stays outside
        assert len(tasks) == 2  # the init and the command (sleep)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        os.close(read)
    for d in dirs.values():
        assert not os.path.exists(d), f"{d} left behind"


def host_kb(key: str) -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"{key}:"))


@pytest.mark.fuse
def test_memory_swap_limit_written_and_shown(tmp_path: Path) -> None:
    """--memory-swap is v1's memsw (memory + swap): the kernel's files hold it, and the view
    shows the swap alone (32M here), at most the host's swap, in meminfo, swaps and free."""
    if not os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"):
        pytest.skip("the kernel does not account swap for cgroups (swapaccount=0)")
    from pidns.cgroups.layout import System
    from pidns.cgroups.memory import memory
    from pidns.view.files.meminfo import render_meminfo

    out = tmp_path / "out"
    script = (
        "grep -E '^(MemTotal|Swap(Total|Free)):' /proc/meminfo; echo ---; cat /proc/swaps; "
        f"echo ---; free -k; echo ---; cat /proc/self/cgroup; mv {out} {out}.done; exec sleep 30"
    )
    read, write = os.pipe()
    proc = subprocess.Popen(
        [*PIDNS, "run", "--status-json", f"/dev/fd/{write}", "--memory", "64M",
         "--memory-swap", "96M", "--virtualize", "--", "sh", "-c", script],
        pass_fds=(write,), stdout=out.open("w"),
    )  # fmt: skip
    os.close(write)
    try:
        with os.fdopen(read) as status:
            host_pid = json.loads(status.readline())["host_pid"]
            deadline = time.monotonic() + 20
            while not Path(f"{out}.done").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            meminfo, swaps, free, cgroup = Path(f"{out}.done").read_text().split("---\n")
            dirs = {d.split("/")[4]: d for d in cgroups_inside(cgroup)}
            mem = Path(dirs["memory"])
            assert (mem / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
            assert (mem / "memory.memsw.limit_in_bytes").read_text().strip() == str(96 << 20)
            # the kernel's accounting of that live cgroup, read as the view reads it
            own = memory(System().of_pid(host_pid))
            assert own is not None and own.swap_total == 32 << 20
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    shown = min(32 << 10, host_kb("SwapTotal"))
    assert re.search(r"^MemTotal:\s+65536 kB$", meminfo, re.M), meminfo
    assert re.search(rf"^SwapTotal:\s+{shown} kB$", meminfo, re.M), meminfo
    swap_lines = swaps.splitlines()[1:]
    if shown:
        assert [line.split()[:3] for line in swap_lines] == [["none", "virtual", str(shown)]]
    else:
        assert swap_lines == []  # no swap on this host: none to show
    assert [line.split()[1] for line in free.splitlines()[1:3]] == ["65536", str(shown)]
    # on a host with swap, the same cgroup shows its 32M
    fake_host = b"MemTotal: 4194304 kB\nSwapTotal: 1048576 kB\nSwapFree: 1048576 kB\n"
    assert b"SwapTotal:         32768 kB" in render_meminfo(fake_host, own)
    for d in dirs.values():
        assert not os.path.exists(d), f"{d} left behind"


@pytest.mark.fuse
def test_cpus_from_quota_shows_the_quotas_cpus() -> None:
    host = os.cpu_count() or 1
    if host < 2:
        pytest.skip("needs 2 CPUs to tell the quota's count from the cpuset's")
    script = "grep -c ^processor /proc/cpuinfo; grep -c ^cpu /proc/stat; nproc"
    quota = pidns(
        "run", "--cpus", "1", "--virtualize", "--cpus-from-quota", "--", "sh", "-c", script
    )
    assert quota.returncode == 0, quota.stderr
    processors, stat_lines, nproc = quota.stdout.split()
    assert processors == "1" and stat_lines == "2"  # "cpu" and "cpu0"
    assert nproc == str(len(os.sched_getaffinity(0)))  # the scheduler is not limited by a quota
    plain = pidns("run", "--cpus", "1", "--virtualize", "--", "sh", "-c", script)
    assert plain.stdout.split()[:2] == [str(host), str(host + 1)]
    half = pidns(
        "run", "--cpus", "1.5", "--virtualize", "--cpus-from-quota", "--", "sh", "-c", script
    )
    assert half.stdout.split()[0] == "2"  # ceil(quota / period)


def test_pids_max_is_enforced() -> None:
    result = pidns("run", "--pids-max", "3", "--", "sh", "-c", "sleep 5 & sleep 5 & wait")
    assert result.returncode != 0
    assert "fork" in result.stderr.lower()


@pytest.mark.fuse
def test_uptime_sysinfo_and_btime_count_from_the_namespace() -> None:
    with open("/proc/uptime") as f:
        host_uptime = float(f.read().split()[0])
    result = pidns(
        "run", "--virtualize", "--", "sh", "-c",
        f"cat /proc/uptime; grep btime /proc/stat; {sys.executable} -c '{SYSINFO}'",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    uptime, btime, sysinfo = result.stdout.splitlines()
    seconds = float(uptime.split()[0])
    assert seconds < 10 < host_uptime
    info_uptime, boottime, now = sysinfo.split()
    assert int(info_uptime) < 10 and float(boottime) < 10  # sysinfo(2), CLOCK_BOOTTIME
    # btime: the namespace's birth, consistent with its own clock
    assert abs(int(btime.split()[1]) - (float(now) - float(boottime))) <= 2
    with open("/proc/stat") as f:
        host_btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    assert int(btime.split()[1]) - host_btime >= host_uptime - 20


PS_TIMES = (
    "cat /proc/self/timens_offsets; echo ---; cut -d' ' -f22 /proc/1/stat; echo ---; "
    "TZ=UTC ps -eo etimes=,lstart=,comm=; echo ---; date +%s"
)


def _ps_times(out: str) -> tuple[str, int, list[tuple[int, float, str]]]:
    """(timens_offsets, pid 1's start ticks, [(etimes, lstart in Unix time, comm)])."""
    offsets, start, ps, _ = out.split("---\n")
    rows = []
    for line in ps.splitlines():
        words = line.split()
        started = calendar.timegm(time.strptime(" ".join(words[1:6]), "%a %b %d %H:%M:%S %Y"))
        rows.append((int(words[0]), float(started), words[6]))
    return offsets, int(start), rows


def _check_times(rows: list[tuple[int, float, str]], since: float, what: str) -> None:
    for etimes, started, comm in rows:
        assert 0 <= etimes < 60, (what, comm, etimes)  # a wrapped one is ~441077233 days
        assert since - 2 <= started <= time.time() + 2, (what, comm, started)


# Open: about one run in three, `ps` through `exec --backend fuse --virtualize` sees its own start
# time about 2**32/25 s past the uptime it read (etimes 4123168608): one of the two was rendered
# without the reader's boottime offset. Cause not found yet; the other backends hold.
@pytest.mark.xfail(
    reason="a fuse --virtualize reader's start time or uptime now and then unshifted"
)
@pytest.mark.fuse
def test_start_times_inside_follow_the_time_namespace() -> None:
    """ps inside `run --virtualize`, and inside `exec` into it through each backend: start times,
    uptime and the clocks agree (elapsed times small, not wrapped; start dates now), and the
    FUSE view's start times are the kernel's for a reader in the time namespace."""
    since = time.time()
    result = pidns("run", "--virtualize", "--", "sh", "-c", PS_TIMES)
    assert result.returncode == 0, result.stderr
    offsets, _, rows = _ps_times(result.stdout)
    assert int(offsets.split("boottime")[1].split()[0]) < 0  # a time namespace, born near 0
    _check_times(rows, since, "run")
    with background("--virtualize", "--", "sleep", "60") as bg:
        init = bg.started["inits"][-1]
        with open(f"/proc/{init}/timens_offsets") as f:
            init_offsets = f.read()
        starts = set()
        for backend in (["kernel"], ["fuse"], ["fuse", "--virtualize"], ["kernel", "--virtualize"]):
            what = " ".join(backend)
            inside = pidns("exec", "--ns", f"@{init}", "--backend", *backend, "--", "sh", "-c",
                           PS_TIMES)  # fmt: skip
            assert inside.returncode == 0, inside.stderr
            got_offsets, start, rows = _ps_times(inside.stdout)
            assert got_offsets == init_offsets, what  # exec joined the namespace's time namespace
            _check_times(rows, since, what)
            starts.add(start)
    assert len(starts) == 1, starts  # pid 1's start: the FUSE view's is the kernel's


@pytest.mark.fuse
def test_virtualize_keeps_the_kernels_per_task_files() -> None:
    """Only the resource files are the view's: ps reads the kernel's procfs, at its speed."""
    result = pidns(
        "run", "--virtualize", "--", "sh", "-c",
        "grep ' /proc' /proc/self/mountinfo; ps -eo pid=,comm=",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    mounts = [line for line in lines if "/proc" in line]
    fuse = {line.split()[4] for line in mounts if "fuse.pidns" in line}
    assert "/proc/meminfo" in fuse and "/proc/stat" in fuse and "/proc/uptime" in fuse
    assert any(line.split()[4] == "/proc" and " - proc " in line for line in mounts)
    assert "/proc/1/status" not in fuse
    ps = [line.split() for line in lines if line.strip() and "/proc" not in line]
    assert ps[0] == ["1", "pidns-init"]


def test_cgroup_removed_after_a_failure() -> None:
    proc = subprocess.Popen(
        [*PIDNS, "run", "--memory", "64M", "--", "no-such-command-wt"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 127, err
    assert made_by(proc.pid) == []


def _limited_sleeper() -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """`pidns run --memory 64M -- sleep 60`, once started: the launcher and its status line."""
    read, write = os.pipe()
    proc = subprocess.Popen(
        [*PIDNS, "run", "--status-json", f"/dev/fd/{write}", "--memory", "64M", "--",
         "sleep", "60"],
        pass_fds=(write,),
    )  # fmt: skip
    os.close(write)
    with os.fdopen(read) as status:
        return proc, json.loads(status.readline())


def test_cgroup_removed_after_sigkill_of_the_launcher() -> None:
    proc, _ = _limited_sleeper()
    dirs = made_by(proc.pid)
    assert dirs
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(os.path.exists(d) for d in dirs):
        time.sleep(0.1)
    assert [d for d in dirs if os.path.exists(d)] == []


def _janitor_of(launcher: int) -> int:
    """The janitor a launcher forked: a copy of it (same command line) in a session of its own,
    in the launcher's PID namespace (the namespace's init is a copy too)."""

    def cmdline_and_sid(pid: int) -> tuple[bytes, int]:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read() + os.readlink(f"/proc/{pid}/ns/pid").encode()
        with open(f"/proc/{pid}/stat", "rb") as f:
            return cmdline, int(f.read().rsplit(b")", 1)[1].split()[3])

    cmdline, sid = cmdline_and_sid(launcher)
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == launcher:
            continue
        try:
            other, other_sid = cmdline_and_sid(int(name))
        except (OSError, IndexError):
            continue
        if other == cmdline and other_sid != sid:
            return int(name)
    raise AssertionError(f"no janitor of {launcher}")


def test_a_later_run_sweeps_what_a_killed_janitor_left() -> None:
    """SIGKILL of the launcher and of its janitor leaves the cgroup once the namespace ends;
    the next run removes it (once old enough that no launcher can still be filling it)."""
    proc, started = _limited_sleeper()
    init = started["inits"][0]
    dirs = made_by(proc.pid)
    assert dirs
    janitor = _janitor_of(proc.pid)
    os.kill(janitor, signal.SIGKILL)
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 15
    while os.path.exists(f"/proc/{init}") and time.monotonic() < deadline:
        time.sleep(0.05)  # the init dies with its parent (die-with-parent)
    time.sleep(0.5)
    left = [d for d in dirs if os.path.exists(d)]
    assert left, "nothing was left to sweep"
    old = time.time() - 3600
    for d in left:
        os.utime(d, (old, old))
    result = pidns("run", "--memory", "64M", "--", "true")
    assert result.returncode == 0, result.stderr
    assert [d for d in dirs if os.path.exists(d)] == []


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--memory", "12Q"], "--memory 12Q"),
        (["--memory", "-5M"], "--memory -5M"),
        (["--memory", "1k"], "too small"),
        (["--cpus", "0"], "--cpus 0"),
        (["--cpus", "lots"], "--cpus lots"),
        (["--cpus", "999"], "more than this machine"),
        (["--cpuset", "99"], "CPU 99 is not available"),
        (["--cpuset", "1-0"], "--cpuset 1-0"),
        (["--pids-max", "0"], "--pids-max 0"),
        (["--memory-swap", "96M"], "needs --memory"),
        (["--memory", "64M", "--memory-swap", "32M"], "less than --memory"),
        (["--memory", "64M", "--memory-swap", "lots"], "--memory-swap lots: not a size"),
        (["--cpus", "1", "--cpus-from-quota"], "--cpus-from-quota needs --virtualize"),
    ],
)
def test_bad_limits(args: list[str], named: str) -> None:
    proc = subprocess.Popen([*PIDNS, "run", *args, "--", "true"], stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pidns: error: ") and named in lines[0], err
    assert made_by(proc.pid) == []


def test_sandbox_limits_its_processes() -> None:
    import pidns as api

    with api.Sandbox(memory="64M", cpuset="0", pids_max=50, virtualize=True) as sb:
        dirs = sb.cgroup
        p = sb.spawn(
            ["sh", "-c", "head -1 /proc/meminfo; nproc; cat /proc/uptime"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        out, _ = p.communicate(timeout=30)
        spawned = Path(dirs["pids"], "pids.current").read_text()
        assert int(spawned) >= 1
    meminfo, nproc, uptime = out.splitlines()
    assert meminfo.split()[1] == "65536"
    assert nproc == "1"
    assert float(uptime.split()[0]) < 10
    for d in dirs.values():
        assert not os.path.exists(d)


@pytest.mark.fuse
def test_sandbox_memory_swap_and_cpus_from_quota() -> None:
    import pidns as api
    from pidns.errors import UsageError

    with api.Sandbox(
        memory="64M", memory_swap="96M", cpus=1, virtualize=True, cpus_from_quota=True
    ) as sb:
        dirs = sb.cgroup
        memsw = Path(dirs["memory"], "memory.memsw.limit_in_bytes").read_text().strip()
        p = sb.spawn(["grep", "-c", "^processor", "/proc/cpuinfo"], stdout=subprocess.PIPE)
        out, _ = p.communicate(timeout=30)
    assert memsw == str(96 << 20)
    assert out.strip() == b"1"
    with pytest.raises(UsageError, match="less than --memory"):
        api.Sandbox(memory="64M", memory_swap="32M")
    with pytest.raises(UsageError, match="needs virtualize"):
        api.Sandbox(cpus=1, cpus_from_quota=True)


# -- rootless ----------------------------------------------------------------------------------


@pytest.fixture
def nobody_home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pidns-limits-"))
    os.chown(path, NOBODY, NOBODY)
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _as_nobody(home: Path, args: list[str], prefix: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "PIDNS_"))}
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(home), PIDNS_STATE_DIR=f"{home}/state")
    command = shlex.join(
        [*AS_NOBODY, installed_for_users().python, "-m", "pidns.cli.main", "run", *args]
    )
    return subprocess.run(
        ["sh", "-c", f"{prefix}exec {command}"],
        capture_output=True, text=True, timeout=60, env=env, cwd="/",
    )  # fmt: skip


def test_rootless_without_delegation_says_what_to_do(nobody_home: Path) -> None:
    result = _as_nobody(nobody_home, ["--memory", "64M", "--", "true"])
    assert result.returncode == 125
    line = result.stderr.strip()
    assert line.startswith("pidns: error: cannot create a cgroup: ") and "\n" not in line
    assert "Permission denied" in line and "delegate" in line


@pytest.mark.fuse
def test_rootless_in_a_delegated_v2_subtree(nobody_home: Path, device_for_users: None) -> None:
    """As systemd delegates (user@UID.service): a subtree the user owns, the shell in a leaf of
    it. The run's cgroup goes beside the leaf; on this hybrid machine it has no controllers but
    its own pressure files, and it is removed after."""
    unified = "/sys/fs/cgroup/unified"
    if not os.path.isdir(unified):
        pytest.skip("no v2 hierarchy mounted at /sys/fs/cgroup/unified")
    deleg = Path(unified, f"pidns-test-deleg-{os.getpid()}")
    leaf = deleg / "leaf"
    leaf.mkdir(parents=True)
    try:
        for path in (deleg, leaf):
            for name in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
                os.chown(path / name if name else path, NOBODY, NOBODY)
        result = _as_nobody(
            nobody_home,
            ["--virtualize", "--", "sh", "-c", "grep ^0:: /proc/self/cgroup; cat /proc/uptime"],
            prefix=f"echo $$ > {leaf}/cgroup.procs; ",
        )
        assert result.returncode == 0, result.stderr
        line, uptime = result.stdout.splitlines()
        assert line.startswith(f"0::/{deleg.name}/pidns-"), line
        assert float(uptime.split()[0]) < 10
        assert [p.name for p in deleg.iterdir() if p.name.startswith("pidns-")] == []
    finally:
        for _ in range(50):
            try:
                leaf.rmdir()
                deleg.rmdir()
                break
            except OSError:
                time.sleep(0.1)


@pytest.mark.fuse
@pytest.mark.parametrize("killed", [False, True], ids=["ends", "launcher-killed"])
def test_rootless_in_a_delegated_scope_under_a_root_owned_slice(
    nobody_home: Path, device_for_users: None, killed: bool
) -> None:
    """As `systemd-run --user --scope -p Delegate=yes` makes one: the scope, where the launcher
    starts, is the user's; the slice above it is root's. The launcher moves into a leaf of its
    own under the scope and the run's cgroup goes beside that leaf (this hybrid machine's v2
    hierarchy has no controllers to enable, but the moves are the kernel's). After the run the
    launcher is back in the scope, and the leaf goes once what it started there has ended;
    after SIGKILL of the launcher its janitor removes both."""
    unified = "/sys/fs/cgroup/unified"
    if not os.path.isdir(unified):
        pytest.skip("no v2 hierarchy mounted at /sys/fs/cgroup/unified")
    slice_ = Path(unified, f"pidns-test-slice-{os.getpid()}")
    scope = slice_ / "run.scope"
    scope.mkdir(parents=True)
    try:
        for name in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
            os.chown(scope / name if name else scope, NOBODY, NOBODY)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "PIDNS_"))}
        home = nobody_home
        env.update(HOME=str(home), XDG_RUNTIME_DIR=str(home), PIDNS_STATE_DIR=f"{home}/state")
        command = shlex.join(
            [*AS_NOBODY, installed_for_users().python, "-m", "pidns.cli.main", "run",
             "--virtualize", "--", "sh", "-c", "grep ^0:: /proc/self/cgroup; sleep 2"]
        )  # fmt: skip
        proc = subprocess.Popen(
            ["sh", "-c", f"echo $$ > {scope}/cgroup.procs; exec {command}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd="/",
        )  # fmt: skip
        leaf = scope / f"pidns-{proc.pid}"
        deadline = time.monotonic() + 20
        seen = False
        while proc.poll() is None and time.monotonic() < deadline:
            leaves = list(scope.glob(f"pidns-{proc.pid}-*.launcher"))
            if leaves:
                leaf = leaves[0]
                with contextlib.suppress(OSError):  # removed meanwhile, once the run is over
                    seen = seen or str(proc.pid) in (leaf / "cgroup.procs").read_text().split()
            if seen and killed:
                proc.kill()
            time.sleep(0.05)
        out, err = proc.communicate(timeout=30)
        assert seen, "the launcher was never in a leaf of its own"
        run_dir = leaf.name.removesuffix(".launcher")
        if killed:
            assert proc.returncode == -signal.SIGKILL
        else:
            assert proc.returncode == 0, err
            assert out.strip() == f"0::/{slice_.name}/{scope.name}/{run_dir}"
        deadline = time.monotonic() + 20  # the view daemon the launcher started lingers a while

        def busy() -> bool:  # the leaf, or the janitor that removes it, still there
            dirs = any(p.is_dir() for p in scope.iterdir())
            return dirs or bool((scope / "cgroup.procs").read_text())

        while busy() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p.name for p in scope.iterdir() if p.is_dir()] == []
        assert (scope / "cgroup.procs").read_text() == ""
        assert not list(slice_.glob("pidns-*"))  # nothing beside the scope, where it may not go
    finally:
        for _ in range(100):
            try:
                for d in sorted(scope.glob("*/"), reverse=True):
                    d.rmdir()
                scope.rmdir()
                slice_.rmdir()
                break
            except OSError:
                time.sleep(0.1)
