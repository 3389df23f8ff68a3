"""`pidns exec --ns NS -- CMD`: CMD runs in NS, with NS's own procfs at /proc."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from pidns import Sandbox
from pidns.procfs.snapshot import snapshot
from tests.integration.runtime_util import background, nspid, pidns

pytestmark = pytest.mark.root


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(nest=2) as sb:
        sb.spawn(["sh", "-c", "sleep 60 & sleep 60"], stdout=subprocess.DEVNULL)
        yield sb


@pytest.mark.parametrize("how", ["inode", "pid:[inode]", "@pid", "path"])
def test_ps_inside_shows_the_namespace_as_the_kernel_does(sandbox: Sandbox, how: str) -> None:
    init = sandbox.init_pids[-1]
    designator = {
        "inode": str(sandbox.ns.ino),
        "pid:[inode]": str(sandbox.ns),
        "@pid": f"@{init}",
        "path": f"/proc/{init}/ns/pid",
    }[how]
    result = pidns("exec", "--ns", designator, "--", "ps", "-eo", "pid=,comm=")
    assert result.returncode == 0, result.stderr
    inside = {int(line.split()[0]): line.split()[1] for line in result.stdout.splitlines()}
    snap = snapshot()
    ns = snap.by_ino(sandbox.ns.ino)
    assert ns is not None
    expected = {int(v.pid): v.task.comm for v in snap.views(ns)}
    ps_pid = max(inside)  # ps itself joined after the snapshot
    assert inside.pop(ps_pid) == "ps"
    assert inside == expected
    assert inside[1] == "pidns-init"


def test_exec_runs_at_the_namespaces_level(sandbox: Sandbox) -> None:
    result = pidns("exec", "--ns", str(sandbox.ns.ino), "--", "sh", "-c", "cat /proc/self/status")
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("NSpid:"))
    assert (
        len(line.split()) == 2
    )  # one number: /proc is the namespace's own (docs/kernel-proc.md §7)


def test_exec_into_an_outer_level(sandbox: Sandbox) -> None:
    outer = sandbox.namespaces[0].ino
    result = pidns("exec", "--ns", str(outer), "--", "ps", "-eo", "comm=")
    assert result.returncode == 0, result.stderr
    # level 1 sees its own init, level 2's init and everything below
    assert result.stdout.split().count("pidns-init") == 2


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["true"], 0),
        (["sh", "-c", "exit 5"], 5),
        (["sh", "-c", "kill -9 $$"], 137),
        (["no-such-command-here"], 127),
        (["/etc/hostname"], 126),
    ],
)
def test_exit_statuses(sandbox: Sandbox, argv: list[str], code: int) -> None:
    result = pidns("exec", "--ns", str(sandbox.ns.ino), "--", *argv)
    assert result.returncode == code, result.stderr
    if code >= 126 and code < 128:
        assert result.stderr.startswith("pidns: error: ") and result.stderr.count("\n") == 1


def test_exec_is_not_left_with_the_old_proc() -> None:
    with background("--", "sleep", "60") as run:
        result = pidns("exec", "--ns", f"@{run.started['host_pid']}", "--", "cat", "/proc/1/comm")
        assert result.stdout.strip() == "pidns-init"
        assert nspid(run.started["host_pid"])[-1] == 2


def test_bad_designator_is_2() -> None:
    result = pidns("exec", "--ns", "no-such-name", "--", "true")
    assert result.returncode == 2
    assert "no-such-name" in result.stderr and result.stderr.count("\n") == 1


def test_exec_keeps_the_working_directory(sandbox: Sandbox) -> None:
    result = pidns("exec", "--ns", str(sandbox.ns.ino), "--", "pwd", cwd="/usr")
    assert result.stdout.strip() == "/usr"


def test_callers_namespaces_are_untouched(sandbox: Sandbox) -> None:
    before = {n: os.stat(f"/proc/self/ns/{n}").st_ino for n in ("pid", "mnt", "user")}
    sandbox.spawn(["true"]).wait(10)
    after = {n: os.stat(f"/proc/self/ns/{n}").st_ino for n in ("pid", "mnt", "user")}
    assert before == after
