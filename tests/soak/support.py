"""Helpers for the view tests that own their daemon: soak, faults, bounds.

Each test gets a daemon of its own (a private state directory), so it can kill or measure that
daemon without touching any other view on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PIDNS = [sys.executable, "-m", "pidns.cli.main"]


def pidns(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PIDNS, *args], capture_output=True, text=True, timeout=timeout)


def wait_for(predicate: Callable[[], object], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.02)


def first_child(pid: int) -> int:
    """The host pid of the process's first child; 0 when it has none (or is gone)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0
    return int(kids[0]) if kids else 0


def state_dir() -> Path:
    return Path(os.environ["PIDNS_STATE_DIR"])


def daemon_pid() -> int:
    return int(json.loads((state_dir() / "daemon.pid").read_text())["pid"])


def daemon_figures(pid: int) -> tuple[int, float]:
    """(open fds, RSS in MB) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return fds, int(line.split()[1]) / 1024
    return fds, 0.0


def patched_daemon(
    state_dir: Path, script: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A view daemon run by `script` (for `python -c`: the daemon with a fault patched in),
    logging to state_dir's daemon.log, once it has started."""
    daemon = subprocess.Popen(
        [sys.executable, "-c", script],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(state_dir / "daemon.log", "ab"),  # noqa: SIM115 - the child's
        start_new_session=True,
    )
    try:
        wait_for(lambda: (state_dir / "daemon.pid").exists(), 10, "the daemon did not start")
    except AssertionError:
        daemon.kill()
        daemon.wait()
        raise
    return daemon


def holder_pid() -> int:
    from pidns.view import holding

    status = holding.status()
    assert status is not None, "no holder runs"
    return int(status["holder"])


def loaded_spare(other_than: int = 0) -> int:
    """The holder's spare successor, once one other than `other_than` has loaded."""
    from pidns.view import holding

    found = [0]

    def loaded() -> bool:
        status = holding.status() or {}
        found[0] = int(status.get("spare") or 0)
        return found[0] not in (0, other_than) and bool(status.get("spare_loaded"))

    wait_for(loaded, 20, "the holder keeps no spare")
    return found[0]


def holder_figures(holder: int) -> tuple[int, float]:
    """The holder's (fds, RSS) once its spare has loaded and no client but the daemon is
    connected (its listener, the daemon's life line and the spare's stdin are its only sockets):
    a status request of a moment ago is no leak."""
    loaded_spare()

    def settled() -> bool:
        links = []
        for fd in os.listdir(f"/proc/{holder}/fd"):
            with contextlib.suppress(OSError):  # an fd closed meanwhile
                links.append(os.readlink(f"/proc/{holder}/fd/{fd}"))
        return sum(link.startswith("socket:") for link in links) == 3

    wait_for(settled, 10, "the holder keeps a client's connection, or has no daemon attached")
    return daemon_figures(holder)


def with_view_at_proc(init: int, view: Path, command: str) -> list[str]:
    """argv of a shell command run in init's PID namespace, in a mount namespace of its own with
    the view at /proc (a container's /proc, as LXCFS users bind it)."""
    return [
        "nsenter",
        f"--target={init}",
        "--pid",
        "--",
        "unshare",
        "--mount",
        "sh",
        "-c",
        f"mount --bind {shlex.quote(str(view))} /proc && {command}",
    ]


def mounts_under(base: Path) -> list[str]:
    prefix = str(base.resolve()) + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split(" ")[4].replace("\\040", " ")
            if point.startswith(prefix):
                found.append(point)
    return found


@contextlib.contextmanager
def private_daemon(base: Path, start: bool = True) -> Iterator[Path]:
    """A view daemon of this test's own (PIDNS_STATE_DIR under base, for this process and the
    commands it runs); on the way out every mount under base is detached and that daemon ended."""
    old = os.environ.get("PIDNS_STATE_DIR")
    state = base / "state"
    state.mkdir(exist_ok=True)
    os.environ["PIDNS_STATE_DIR"] = str(state)
    try:
        if start:
            from pidns.view.api import ensure_daemon

            ensure_daemon()
        yield state
    finally:
        for point in reversed(mounts_under(base)):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        _end_holder()  # first: a daemon killed with its holder alive has a successor started
        with contextlib.suppress(OSError, ValueError):
            pid = daemon_pid()
            if "pidns" in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGKILL)
        if old is None:
            del os.environ["PIDNS_STATE_DIR"]
        else:
            os.environ["PIDNS_STATE_DIR"] = old


def _end_holder() -> None:
    """Stop this state directory's holder (it closes what it keeps and starts no successor)."""
    from pidns.view import holding

    status = holding.status()
    if status is None:
        return
    pid = int(status["holder"])
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)


@contextlib.contextmanager
def namespace(script: str = "sleep 1000 & sleep 1000 & wait") -> Iterator[int]:
    """A namespace made by util-linux whose init is `sh -c script`; yields that init's host pid."""
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script],
        start_new_session=True,
    )
    own = os.stat("/proc/self/ns/pid").st_ino
    try:
        init = 0

        def started() -> bool:
            nonlocal init
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if kids and os.stat(f"/proc/{kids[0]}/ns/pid").st_ino != own:
                init = int(kids[0])
            return bool(init)

        wait_for(started, 10, "the namespace did not start")
        yield init
    finally:
        end_namespace(proc, init)


def end_namespace(proc: subprocess.Popen[Any], init: int) -> None:
    """SIGKILL the namespace's init (the kernel then kills every task in it) and reap unshare."""
    with contextlib.suppress(OSError):
        if init:
            os.kill(init, signal.SIGKILL)
    with contextlib.suppress(OSError):
        proc.kill()
    proc.wait(30)
