"""/sys/devices/system/cpu/online inside `pidns run --virtualize`, `pidns exec --virtualize`
(FUSE backend and the hybrid) and `Sandbox(virtualize=True)`: glibc's get_nprocs, and so
os.cpu_count(), psutil.cpu_count() and sysconf(_SC_NPROCESSORS_ONLN), read that file. It shows
the cgroup's cpuset (with --cpus-from-quota, the quota's CPUs), bound in the command's own mount
namespace only: the host's file and mounts stay as they were, and nothing is left mounted."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pidns as api
from pidns.cgroups.cpu import parse_cpu_list
from tests.integration import containers
from tests.integration.runtime_util import background, pidns

ONLINE = "/sys/devices/system/cpu/online"
HOST_ONLINE = Path(ONLINE).read_text() if os.path.exists(ONLINE) else ""

pytestmark = [
    pytest.mark.root,
    pytest.mark.fuse,
    pytest.mark.skipif(
        len(parse_cpu_list(HOST_ONLINE.strip() or "0")) < 2,
        reason="needs a host with 2 CPUs or more (one CPU shows the same either way)",
    ),
]

# Every count a program may ask for, and the file itself
COUNTS = (
    "import os, psutil; print(os.cpu_count(), psutil.cpu_count(), "
    "os.sysconf('SC_NPROCESSORS_ONLN'), open('/sys/devices/system/cpu/online').read().strip())"
)


def counts(out: str) -> tuple[list[int], str]:
    *numbers, online = out.split()
    return [int(n) for n in numbers], online


def pidns_mounts() -> list[str]:
    """This process's mounts that are pidns's or over the online file."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [ln for ln in lines if "pidns-virtual-" in ln or "pidns-exec-" in ln or ONLINE in ln]


@pytest.fixture
def untouched() -> Iterator[None]:
    """Around the test: the host's file and this mount namespace end as they began."""
    before = pidns_mounts()
    yield
    assert Path(ONLINE).read_text() == HOST_ONLINE
    deadline = time.monotonic() + 5  # a temporary view's lazy unmount may lag a moment
    while pidns_mounts() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pidns_mounts() == before


def cpuset_of(pid: int) -> str:
    """The cpuset.cpus of pid's v1 cpuset cgroup."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if "cpuset" in names.split(","):
            return Path(f"/sys/fs/cgroup/cpuset{path}/cpuset.cpus").read_text().strip()
    raise AssertionError(f"{pid} has no cpuset cgroup")


@pytest.mark.parametrize(
    ("limits", "online"),
    [(["--cpuset", "0"], "0"), (["--cpus", "1", "--cpus-from-quota"], "0")],
    ids=["cpuset", "cpus-from-quota"],
)
def test_run_shows_its_cpus(untouched: None, limits: list[str], online: str) -> None:
    out = pidns("run", *limits, "--virtualize", "--", sys.executable, "-c", COUNTS)
    assert out.returncode == 0, out.stderr
    assert counts(out.stdout) == ([1, 1, 1], online)


def test_run_binds_it_in_its_own_mount_namespace_only(untouched: None) -> None:
    with background("--cpuset", "1", "--virtualize", "--", "sleep", "60") as run:
        command = run.started["host_pid"]
        # the command's cgroup's cpuset, through the command's root; the host's file unchanged
        assert Path(f"/proc/{command}/root{ONLINE}").read_text().strip() == cpuset_of(command)
        assert cpuset_of(command) == "1"
        assert Path(ONLINE).read_text() == HOST_ONLINE
        inside = Path(f"/proc/{command}/mountinfo").read_text()
        assert f" {ONLINE} " in inside
        # the proc tree the command sees lists what the kernel's does
        listed = set(os.listdir(f"/proc/{command}/root/proc"))
        assert not [name for name in listed if name.startswith(".")]
        assert all(not ln.startswith(".") for ln in os.listdir("/proc"))


def test_sandbox_shows_its_cpus(untouched: None) -> None:
    with api.Sandbox(cpuset="0", virtualize=True) as sb:
        p = sb.spawn([sys.executable, "-c", COUNTS], stdout=subprocess.PIPE, text=True)
        out, _ = p.communicate(timeout=30)
        assert p.returncode == 0
    assert counts(out) == ([1, 1, 1], "0")


@pytest.mark.parametrize("backend", ["fuse", "kernel"])
def test_exec_shows_the_namespace_s_cpus(untouched: None, backend: str) -> None:
    with background("--cpuset", "1", "--", "sleep", "60") as run:
        ns = f"@{run.started['host_pid']}"
        out = pidns(
            "exec", "--ns", ns, "--backend", backend, "--virtualize", "--",
            sys.executable, "-c", COUNTS,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert counts(out.stdout) == ([1, 1, 1], "1")
        # the view (FUSE: /proc itself) lists no name of its own
        listed = pidns(
            "exec", "--ns", ns, "--backend", backend, "--virtualize", "--", "ls", "-a", "/proc"
        )
        assert listed.returncode == 0, listed.stderr
        assert [n for n in listed.stdout.split() if n.startswith(".")] == [".", ".."]
        # without --virtualize the file is the host's
        out = pidns("exec", "--ns", ns, "--", "cat", ONLINE)
        assert out.stdout == HOST_ONLINE


@pytest.fixture(scope="module")
def pinned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A podman container made with --cpuset-cpus 0; its name."""
    why = containers.missing()
    if why is not None:
        pytest.skip(why)
    with contextlib.ExitStack() as stack:
        image = stack.enter_context(containers.busybox_image(tmp_path_factory.mktemp("online")))
        name, _pid = stack.enter_context(containers.container(image, "--cpuset-cpus", "0"))
        yield name


@pytest.mark.parametrize("backend", ["fuse", "kernel"])
def test_exec_into_a_podman_container_shows_its_cpuset(
    untouched: None, pinned: str, backend: str
) -> None:
    out = pidns(
        "exec", "--ns", f"podman:{pinned}", "--backend", backend, "--virtualize", "--",
        sys.executable, "-c", COUNTS,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert counts(out.stdout) == ([1, 1, 1], "0")


def test_the_file_survives_a_daemon_restart(untouched: None) -> None:
    """The view's sysfs directory is found again by the daemon that takes the view over."""
    with background("--cpuset", "1", "--virtualize", "--", "sleep", "60") as run:
        online = Path(f"/proc/{run.started['host_pid']}/root{ONLINE}")
        assert online.read_text() == "1\n"
        out = pidns("daemon", "restart")
        assert out.returncode == 0, out.stderr
        assert online.read_text() == "1\n"


def test_rootless_run_and_exec_bind_it_too(tmp_path: Path, device_for_users: None) -> None:
    """As nobody, in a v2 subtree delegated as systemd lays one out: the run and an exec into
    it (both backends) get the bind. This machine's v2 hierarchy has no cpuset controller and
    nobody may not write the v1 ones, so the file shows the host's CPUs here."""
    import shlex
    import shutil
    import tempfile

    from tests.differential.harness import descendants
    from tests.users import AS_NOBODY, NOBODY, installed_for_users

    unified = "/sys/fs/cgroup/unified"
    if not os.path.isdir(unified):
        pytest.skip("no v2 hierarchy mounted at /sys/fs/cgroup/unified")
    home = Path(tempfile.mkdtemp(prefix="pidns-online-"))
    os.chown(home, NOBODY, NOBODY)
    deleg = Path(unified, f"pidns-test-online-{os.getpid()}")
    leaf = deleg / "leaf"
    leaf.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "PIDNS_"))}
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(home), PIDNS_STATE_DIR=f"{home}/state")
    cli = [*AS_NOBODY, installed_for_users().python, "-m", "pidns.cli.main"]
    proc = None
    try:
        for path in (deleg, leaf):
            for name in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
                os.chown(path / name if name else path, NOBODY, NOBODY)
        run = shlex.join(
            [*cli, "run", "--virtualize", "--", "sh", "-c",
             f"grep -c ' {ONLINE} ' /proc/self/mountinfo; exec sleep 30"]
        )  # fmt: skip
        proc = subprocess.Popen(
            ["sh", "-c", f"echo $$ > {leaf}/cgroup.procs; exec {run}"],
            stdout=subprocess.PIPE, text=True, env=env, cwd="/",
        )  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "1"  # the run's command has it bound
        ours = os.stat("/proc/self/ns/pid").st_ino
        member = next(
            pid
            for pid in descendants(proc.pid)
            if os.path.exists(f"/proc/{pid}") and os.stat(f"/proc/{pid}/ns/pid").st_ino != ours
        )
        for backend in ("fuse", "kernel"):
            out = subprocess.run(
                [*cli, "exec", "--ns", f"@{member}", "--backend", backend, "--virtualize", "--",
                 "sh", "-c", f"grep -c ' {ONLINE} ' /proc/self/mountinfo; cat {ONLINE}"],
                capture_output=True, text=True, timeout=60, env=env, cwd="/",
            )  # fmt: skip
            assert out.returncode == 0, out.stderr
            assert out.stdout.split() == ["1", HOST_ONLINE.strip()], backend
    finally:
        if proc is not None:
            proc.terminate()
            proc.communicate(timeout=30)
        for _ in range(100):
            try:
                for d in sorted(deleg.glob("**/"), reverse=True):
                    d.rmdir()
                break
            except OSError:
                time.sleep(0.1)
        shutil.rmtree(home, ignore_errors=True)
