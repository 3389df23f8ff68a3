"""An unprivileged user's FUSE view (fusermount3, no root anywhere) against the kernel's procfs of the
same namespace, read by the same user: the namespace's own /proc, mounted by `unshare --mount-proc`."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.users import AS_NOBODY, installed_for_users

pytestmark = [pytest.mark.root, pytest.mark.fuse]  # root only to become the unprivileged user


# Runs as the unprivileged user; prints one JSON object.
PROBE = r"""
import json, os, signal, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from tests.differential.harness import compare
from pidns.view import control, state
from pidns.view.api import open_view

out = {}
home = os.environ["HOME"]
script = "sleep 1000 & (setsid sleep 1000 &) ; sleep 1000 & wait"
ns = subprocess.Popen(["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "sh", "-c", script],
                      stderr=subprocess.DEVNULL)
init = 0
try:
    for _ in range(500):
        kids = open(f"/proc/{ns.pid}/task/{ns.pid}/children").read().split()
        if kids:
            init = int(kids[0])
            break
        time.sleep(0.01)
    kernel = f"/proc/{init}/root/proc"  # the namespace's own procfs, as its owner reaches it
    for _ in range(500):
        if len([n for n in os.listdir(kernel) if n.isdigit()]) >= 4:
            break
        time.sleep(0.01)
    view = f"{home}/view"
    os.mkdir(view)
    handle = open_view(f"@{init}", view, backend="fuse")
    try:
        out["daemon"] = handle.daemon_pid
        out["watch"] = control.request(str(state.socket_path()), {"op": "ping"})["watch"]
        out["problems"] = compare(view, kernel, settle=0.15)
        columns = "pid,ppid,pgid,sid,stat,comm,args"
        enter = ["nsenter", "-t", str(init), "-U", "-p", "--preserve-credentials", "--"]
        out["ps_fuse"] = subprocess.run(
            [*enter, "unshare", "-m", "sh", "-c", f'mount --bind "$0" /proc && exec ps -eo {columns}', view],
            capture_output=True, text=True, timeout=60).stdout
        out["ps_kernel"] = subprocess.run(
            ["nsenter", "-t", str(init), "-U", "-m", "-p", "--preserve-credentials", "--", "ps", "-eo", columns],
            capture_output=True, text=True, timeout=60).stdout
        victim = int(open(f"/proc/{init}/task/{init}/children").read().split()[0])
        ns_pid = [ln for ln in open(f"/proc/{victim}/status") if ln.startswith("NSpid:")][0].split()[-1]
        os.stat(f"{view}/{ns_pid}")  # cached by the kernel, as a walk leaves it
        os.kill(victim, signal.SIGKILL)
        start = time.monotonic()
        while os.path.exists(f"{view}/{ns_pid}") and time.monotonic() - start < 10:
            time.sleep(0.001)
        out["gone"] = not os.path.exists(f"{view}/{ns_pid}")
        out["gone_from_kernel"] = ns_pid not in os.listdir(kernel)
    finally:
        handle.close()
    out["mounted_after"] = view in open("/proc/self/mountinfo").read()
finally:
    if init:
        os.kill(init, signal.SIGKILL)
    ns.wait()
print(json.dumps(out))
"""


def _own_rows(text: str) -> list[str]:
    """ps output without the rows of the probing tools themselves (their pids differ by design)."""
    return [
        line
        for line in text.splitlines()
        if not any(w in line for w in ("ps -eo", "unshare -m", " ps"))
    ]


def test_unprivileged_view_matches_the_kernel_for_its_owner(
    home: Path, device_for_users: None
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PIDNS_STATE_DIR", "XDG_RUNTIME_DIR")}
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(home))
    install = installed_for_users()
    result = subprocess.run(
        [*AS_NOBODY,
         install.python, "-c", PROBE, install.tests_root],
        capture_output=True, text=True, timeout=180, env=env, cwd="/",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    try:
        assert out["watch"] in ("connector", "pidfd")  # the connector is open to users since 6.6
        assert out["problems"] == []
        fuse, kernel = _own_rows(out["ps_fuse"]), _own_rows(out["ps_kernel"])
        assert fuse == kernel and len(kernel) >= 4, (
            f"fuse:\n{out['ps_fuse']}\nkernel:\n{out['ps_kernel']}"
        )
        assert out["gone"] and out["gone_from_kernel"]
        assert not out["mounted_after"]
    finally:
        _wait_gone(int(out["daemon"]))
    assert str(home) not in Path("/proc/self/mountinfo").read_text()


def _wait_gone(pid: int, timeout: float = 15) -> None:
    """The user's daemon leaves by itself once it serves no view."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)
    raise AssertionError(f"the unprivileged view daemon {pid} did not leave")
