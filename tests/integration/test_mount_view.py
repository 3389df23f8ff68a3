"""Real clients, liveness, lifecycle, permissions and bad input for `pidns mount` views."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.fuse]

PIDNS = [sys.executable, "-m", "pidns.cli.main"]


@contextlib.contextmanager
def namespace(script: str = "sleep 1000 & sleep 1000 & wait") -> Iterator[int]:
    """A namespace made by util-linux; yields the host pid of its init (a shell)."""
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script])
    try:
        for _ in range(200):
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if (
                kids
                and os.stat(f"/proc/{kids[0]}/ns/pid").st_ino != os.stat("/proc/self/ns/pid").st_ino
            ):
                yield int(kids[0])
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the namespace did not start")
    finally:
        with contextlib.suppress(OSError):
            for kid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
                os.kill(int(kid), 9)
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def view(ns_pid: int, mountpoint: Path, backend: str, **options: object) -> Iterator[Path]:
    from pidns.view.api import open_view

    mountpoint.mkdir(exist_ok=True)
    handle = open_view(f"@{ns_pid}", str(mountpoint), backend=backend, **options)  # type: ignore[arg-type]
    try:
        yield mountpoint
    finally:
        with contextlib.suppress(Exception):
            handle.close()


def inside(ns_pid: int, proc_dir: Path, argv: list[str], user: list[str] | None = None) -> str:
    """Run argv in the namespace (setns+fork) with proc_dir at /proc in a private mount namespace."""
    wrapper = [
        "nsenter",
        f"--pid=/proc/{ns_pid}/ns/pid",
        "--",
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount --bind "$0" /proc && exec "$@"',
        str(proc_dir),
        *(user or []),
        *argv,
    ]
    return subprocess.run(wrapper, capture_output=True, text=True, timeout=60).stdout


def both(ns_pid: int, tmp: Path, **options: object) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    stack.enter_context(view(ns_pid, tmp / "fuse", "fuse", **options))
    stack.enter_context(view(ns_pid, tmp / "kernel", "kernel", **options))
    return stack


def rows_without_self(text: str, own_names: tuple[str, ...]) -> list[str]:
    """Drop the rows of the observing tools themselves (their pids and states differ by design)."""
    return [line for line in text.splitlines() if not any(n in line for n in own_names)]


def test_ps_pstree_top_psutil_agree(tmp_path: Path) -> None:
    with (
        namespace("sleep 1000 & (setsid sleep 1000 &) ; sleep 1000 & wait") as ns,
        both(ns, tmp_path),
    ):
        for argv, own in (
            (["ps", "-eo", "pid,ppid,pgid,sid,stat,comm,args"], ("ps ",)),
            (["pstree", "-p"], ("pstree",)),
            (
                ["sh", "-c", "top -b -n1 | sed -n '8,$p' | awk '{print $1, $2, $12}'"],
                ("top", "sh", "sed", "awk"),
            ),
            (
                [
                    sys.executable,
                    "-c",
                    "import psutil\nfor p in psutil.process_iter(['pid','ppid','name','status']):\n print(sorted(p.info.items()))",
                ],
                ("python",),
            ),
        ):
            fuse = rows_without_self(inside(ns, tmp_path / "fuse", argv), own)
            kernel = rows_without_self(inside(ns, tmp_path / "kernel", argv), own)
            assert fuse == kernel, (
                f"{argv[0]}:\nfuse:\n" + "\n".join(fuse) + "\nkernel:\n" + "\n".join(kernel)
            )
            assert len(kernel) >= 2


def test_exit_disappears_from_every_view(tmp_path: Path) -> None:
    with (
        namespace("sleep 1000 & sleep 1000 & wait") as ns,
        view(ns, tmp_path / "a", "fuse"),
        view(ns, tmp_path / "b", "fuse"),
    ):
        for d in ("a", "b"):
            assert {"1", "2", "3"} <= set(os.listdir(tmp_path / d))
            os.stat(tmp_path / d / "2" / "status")  # a cached entry
        host = int(Path(f"/proc/{ns}/task/{ns}/children").read_text().split()[0])
        start = time.monotonic()
        os.kill(host, 9)
        gone: dict[str, float] = {}
        while len(gone) < 2 and time.monotonic() - start < 5:
            for d in ("a", "b"):
                if d not in gone and not os.path.exists(tmp_path / d / "2"):
                    gone[d] = time.monotonic() - start
        assert set(gone) == {"a", "b"}
        print(f"exit -> gone from both views in {max(gone.values()) * 1000:.1f} ms")


def test_virtualize_shows_the_namespaces_uptime_and_task_counts(tmp_path: Path) -> None:
    """--virtualize (LXCFS-style, no kernel counterpart): uptime counts from the init's start and
    loadavg's running/total are the namespace's tasks; without it both are the host's."""
    clock = os.sysconf("SC_CLK_TCK")
    with (
        namespace("sleep 1000 & sleep 1000 & wait") as ns,
        view(ns, tmp_path / "virtual", "fuse", virtualize=True) as virtual,
        view(ns, tmp_path / "plain", "fuse") as plain,
    ):
        started = int(Path(f"/proc/{ns}/stat").read_text().rsplit(")", 1)[1].split()[19]) / clock
        host_before = float(Path("/proc/uptime").read_text().split()[0])
        uptime = (virtual / "uptime").read_text().split()
        host_after = float(Path("/proc/uptime").read_text().split()[0])
        # the namespace's age, read between two readings of the host's
        assert host_before - started - 0.02 <= float(uptime[0]) <= host_after - started + 0.02
        assert float((plain / "uptime").read_text().split()[0]) >= host_before
        tasks = [n for n in os.listdir(virtual) if n.isdigit()]
        assert sorted(tasks) == ["1", "2", "3"]
        assert (virtual / "loadavg").read_text().split()[3] == "0/3"  # all three asleep
        plain_total = int((plain / "loadavg").read_text().split()[3].split("/")[1])
        assert plain_total > 3  # the host's


def test_virtualize_counts_running_threads_sampled_and_tasks_at_once(tmp_path: Path) -> None:
    """stat's procs_running counts the namespace's threads in R (a process's other threads
    too), loadavg's running its processes in R; those counts may be SAMPLE_SECONDS old, while
    loadavg's total follows an exit at once."""
    from pidns.view.resources import SAMPLE_SECONDS

    # hashing a large buffer releases the GIL: both threads run at once (pure-Python loops
    # would take turns, one of them asleep waiting for the GIL)
    spin = (
        "import hashlib, threading; data = bytes(20_000_000); "
        "[threading.Thread(target=lambda: [hashlib.sha256(data) for _ in iter(int, 1)]).start()"
        " for _ in range(2)]"
    )
    script = f"python3 -c '{spin}' & sleep 1000 & wait"
    with (
        namespace(script) as ns,
        view(ns, tmp_path / "virtual", "fuse", virtualize=True) as virtual,
    ):

        def counts() -> tuple[int, str]:
            stat = dict(line.split(" ", 1) for line in (virtual / "stat").read_text().splitlines())
            return int(stat["procs_running"]), (virtual / "loadavg").read_text().split()[3]

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and counts() != (2, "0/3"):
            time.sleep(0.1)
        assert counts() == (2, "0/3"), "not two spinning threads"
        spinner = next(
            int(n)
            for n in Path(f"/proc/{ns}/task/{ns}/children").read_text().split()
            if Path(f"/proc/{n}/comm").read_text().strip() == "python3"
        )
        os.kill(spinner, 9)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not counts()[1].endswith("/2"):
            time.sleep(0.01)
        assert counts()[1].endswith("/2"), "loadavg's total did not follow the exit"
        time.sleep(SAMPLE_SECONDS)
        assert counts() == (0, "0/2")


def test_init_death_dead_view_and_no_reference(tmp_path: Path) -> None:
    from pidns.view import control, state

    with namespace() as ns:
        ino = os.stat(f"/proc/{ns}/ns/pid").st_ino
        with view(ns, tmp_path / "a", "fuse"), view(ns, tmp_path / "b", "fuse"):
            listed = control.request(str(state.socket_path()), {"op": "list"})["views"]
            mine = [v for v in listed if v["ns"] == ino]
            assert len(mine) == 2 and mine[0]["instance_views"] == mine[1]["instance_views"]
            daemon = control.request(str(state.socket_path()), {"op": "ping"})["pid"]
            os.kill(ns, 9)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and set(os.listdir(tmp_path / "a")) & {"1", "2"}:
                time.sleep(0.01)
            for d in ("a", "b"):
                names = os.listdir(tmp_path / d)
                assert not [n for n in names if n.isdigit()]
                assert "self" in names and "thread-self" in names and "meminfo" in names
            links = [
                os.readlink(f"/proc/{daemon}/fd/{fd}") for fd in os.listdir(f"/proc/{daemon}/fd")
            ]
            assert f"pid:[{ino}]" not in links


@pytest.mark.parametrize("hidepid", ["off", "noaccess", "invisible"])
def test_unprivileged_requester_per_hidepid(tmp_path: Path, hidepid: str) -> None:
    user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    script = (
        "for d in /proc/[0-9]*; do echo $d $(cat $d/status 2>&1 | sed -n 's/^Pid:\\s*//p' | head -1) "
        "$(cat $d/environ >/dev/null 2>&1 && echo env || echo noenv) "
        "$(readlink $d/cwd >/dev/null 2>&1 && echo cwd || echo nocwd); done; ls /proc/1/ 2>&1 | head -1"
    )
    with namespace() as ns, both(ns, tmp_path, hidepid=hidepid, allow_other=True):
        # the namespace's own tasks, before any probe joins it (a probe's pids vary by run); its
        # init forks the two sleeps after it is found in the namespace
        deadline = time.monotonic() + 30
        while True:
            tasks = {int(n) for n in os.listdir(tmp_path / "kernel") if n.isdigit()}
            if len(tasks) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert len(tasks) == 3
        fuse = inside(ns, tmp_path / "fuse", ["sh", "-c", script], user)
        kernel = inside(ns, tmp_path / "kernel", ["sh", "-c", script], user)
        assert _rows_of(fuse, tasks) == _rows_of(kernel, tasks)


def _rows_of(text: str, tasks: set[int]) -> list[str]:
    """The lines about `tasks` and the last one (ls); the probing shell's own rows are left out."""
    row = re.compile(r"^/proc/(\d+) ")
    kept = []
    for line in text.splitlines():
        match = row.match(line)
        if match is None or int(match.group(1)) in tasks:
            kept.append(line)
    return kept


def test_bad_input(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PIDNS, *args], capture_output=True, text=True, timeout=60)

    with namespace() as ns:
        missing = run("mount", f"@{ns}", str(tmp_path / "nope"), "--backend", "fuse")
        assert missing.returncode == 2 and "no such directory" in missing.stderr
        (tmp_path / "file").write_text("")
        not_dir = run("mount", f"@{ns}", str(tmp_path / "file"), "--backend", "fuse")
        assert not_dir.returncode == 2
        (tmp_path / "v").mkdir()
        assert run("mount", f"@{ns}", str(tmp_path / "v"), "--backend", "fuse").returncode == 0
        again = run("mount", f"@{ns}", str(tmp_path / "v"), "--backend", "fuse")
        assert again.returncode == 1 and "already a view" in again.stderr
        listed = run("mounts", "--json")
        assert str(tmp_path / "v") in listed.stdout
        assert run("umount", str(tmp_path / "v")).returncode == 0
        (tmp_path / "busy").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "none", str(tmp_path / "busy")], check=True)
        try:
            busy = run("mount", f"@{ns}", str(tmp_path / "busy"), "--backend", "fuse")
            assert busy.returncode == 1 and "busy" in busy.stderr
        finally:
            subprocess.run(["umount", str(tmp_path / "busy")], check=True)
    dead = run("mount", f"@{ns}", str(tmp_path / "v"), "--backend", "fuse")
    assert dead.returncode != 0 and dead.stderr.startswith("pidns: error:")
    mounted = Path("/proc/self/mountinfo").read_text()
    assert str(tmp_path) not in mounted
