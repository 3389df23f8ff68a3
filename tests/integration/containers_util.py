"""Real container runtimes for the tests: a busybox rootfs built here, and the checks every
runtime's test makes (ps against the kernel, ls naming, exec through FUSE, nesting).

No image registry is used: the rootfs is Debian's busybox-static plus applet links, imported
into each runtime. Containers that run a nested `pidns run` get the host's interpreter and this
checkout bound read-only at the same paths (`pidns_mounts`), never anything else of the host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_inspect_vs_kernel import kernel_tasks
from tests.nstree import kernel_proc

REPO = Path(__file__).resolve().parents[2]
BUSYBOX = "/bin/busybox"
# the runtimes' tests and the resource oracle's (free, top, nproc, dd, sync read or load limits)
APPLETS = [
    *("sh", "sleep", "cat", "ls", "ps", "true", "grep", "head"),
    *("free", "top", "nproc", "dd", "sync"),
]


def need(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: runs real containers")
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (scripts/bootstrap.sh installs it)")
    if not os.path.exists(BUSYBOX) or "static" not in _file(BUSYBOX):
        pytest.skip("needs busybox-static for the image (scripts/bootstrap.sh installs it)")


def _file(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    # a static binary has no PT_INTERP: no "ld-linux" loader path in its first pages
    return "dynamic" if b"ld-linux" in head else "static"


def make_rootfs(where: Path, *mountpoints: str) -> Path:
    """A busybox root at where/rootfs, with empty directories `mountpoints` to bind things on."""
    root = where / "rootfs"
    for d in ["bin", "tmp", "proc", "sys", "dev", "etc", "run", "usr", "root", *mountpoints]:
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, root / "bin/busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    # merged-/usr hosts: the loader and libraries of the bound host interpreter live in /usr
    (root / "lib").symlink_to("usr/lib")
    (root / "lib64").symlink_to("usr/lib64")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return root


def pidns_mounts() -> list[str]:
    """Directories a container needs to run this checkout's pidns: the interpreter's prefix,
    the venv, the source tree, /usr for the C library."""
    wanted = ["/usr", os.path.realpath(sys.base_prefix), sys.prefix, str(REPO)]
    found: list[str] = []
    for path in sorted(set(wanted), key=len):
        if not any(path == f or path.startswith(f + "/") for f in found):
            found.append(path)
    return found


def pidns(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pidns.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def pidns_json(*args: str, env: dict[str, str] | None = None) -> Any:
    done = pidns(*args, "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def ns_of(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/pid").st_ino


def children_namespaces(parent: int, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    return [r for r in pidns_json("ls", env=env) if r["parent"] == parent]


# -- the checks each runtime's test runs ------------------------------------------------------


def check_ps_against_kernel(
    designator: str, init_pid: int, env: dict[str, str] | None = None
) -> None:
    """`ps --ns DESIGNATOR --json` shows what the kernel's procfs for that namespace shows."""
    with kernel_proc(init_pid) as proc:
        for _ in range(5):  # a task may start or end between the two reads: retry, then fail
            ours = {
                r["pid"]: (r["ppid"], tuple(r["nspid"]))
                for r in pidns_json("ps", "--ns", designator, env=env)
            }
            theirs = kernel_tasks(proc)
            if ours == theirs:
                break
            time.sleep(0.2)
        assert ours == theirs


def check_ls_names(
    init_pid: int, runtime: str, ident: str, name: str | None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    ino = ns_of(init_pid)
    records: dict[int, dict[str, Any]] = {r["id"]: r for r in pidns_json("ls", env=env)}
    rec = records[ino]
    assert rec["container"] is not None, rec
    assert rec["container"]["runtime"] == runtime
    assert rec["container"]["id"] == ident
    assert rec["container"]["name"] == name
    assert rec["container_own"] is True
    assert rec["zombies"] == 0 and rec["init_reaps"] is True
    return rec


def check_exec_fuse(designator: str, init_pid: int, env: dict[str, str] | None = None) -> None:
    """`pidns exec --backend fuse` runs the host's ps inside: it sees what the kernel's
    procfs of the namespace shows."""
    done = pidns(
        "exec", "--ns", designator, "--backend", "fuse", "--", "ps", "-eo", "pid=,comm=", env=env
    )
    assert done.returncode == 0, done.stderr
    inside = {int(line.split()[0]) for line in done.stdout.splitlines()}
    with kernel_proc(init_pid) as proc:
        expected = {int(p.name) for p in proc.iterdir() if p.name.isdigit()}
    # ps itself is in both: it ran inside the namespace, and exited before the second read
    assert inside - {max(inside)} <= expected <= inside | expected
    assert 1 in inside


def check_nested(
    designator: str,
    init_pid: int,
    start_nested: Callable[[], None],
    env: dict[str, str] | None = None,
) -> None:
    """A `pidns run` inside the container: ls shows both levels, the inner one inside the
    container; ps from the container's namespace numbers the inner tasks at both levels;
    which shows the container at both levels."""
    outer = ns_of(init_pid)
    start_nested()
    inner = wait_for("the nested namespace", lambda: children_namespaces(outer, env))[0]
    assert inner["container"] is not None and inner["container_own"] is False
    outer_rec = {r["id"]: r for r in pidns_json("ls", env=env)}[outer]
    assert inner["container"] == outer_rec["container"]
    check_ps_against_kernel(designator, init_pid, env)
    rows = pidns_json("ps", "--ns", designator, env=env)
    deep = [r for r in rows if r["ns"] == inner["id"]]
    assert deep and all(len(r["nspid"]) == 2 for r in deep)
    chain = pidns_json("which", str(deep[0]["host_pid"]), env=env)[0]["levels"]
    assert [lv["ns"] for lv in chain] == [chain[0]["ns"], outer, inner["id"]]
    assert chain[1]["container"] == chain[2]["container"] == outer_rec["container"]
    assert chain[0]["container"] is None
    assert chain[2]["pid"] == deep[0]["nspid"][-1] and chain[1]["pid"] == deep[0]["nspid"][0]
