"""`pidns run --nest N`: N levels, each born with its own /proc, checked against the kernel's view
from outside (the host's /proc and a snapshot of it)."""

from __future__ import annotations

import os

import pytest

from pidns.procfs.snapshot import snapshot
from tests.integration.runtime_util import background, nspid, pidns

pytestmark = pytest.mark.root


def test_nest_3_gives_four_pid_numbers() -> None:
    with background("--nest", "3", "--", "sleep", "30") as run:
        command = run.started["host_pid"]
        chain = nspid(command)
        # host, then levels 1..3; pid 1 of each level is its init, the command is pid 2
        assert len(chain) == 4
        assert chain[0] == command and chain[-1] == 2
        assert len(run.started["ns"]) == 3
        assert [nspid(pid)[-1] for pid in run.started["inits"]] == [1, 1, 1]


def test_innermost_proc_is_its_own() -> None:
    """Inside, /proc is the innermost level's, so NSpid starts at that level (one number)."""
    result = pidns("run", "--nest", "3", "--", "cat", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("NSpid:"))
    assert line.split()[1:] == ["2"]


def test_each_level_lists_only_its_subtree() -> None:
    with background("--nest", "3", "--", "sh", "-c", "sleep 30 & sleep 30") as run:
        inits = run.started["inits"]
        snap = snapshot()
        for init, ino in zip(inits, run.started["ns"], strict=True):
            ns = snap.by_ino(ino)
            assert ns is not None
            kernel = {int(n) for n in os.listdir(f"/proc/{init}/root/proc") if n.isdigit()}
            expected = {int(v.pid) for v in snap.views(ns)}
            assert kernel == expected
        levels = [snap.by_ino(ino) for ino in run.started["ns"]]
        assert [ns.level for ns in levels if ns] == [1, 2, 3]
        assert levels[1] and levels[0] and levels[1].parent == levels[0].id
        assert levels[2] and levels[2].parent == levels[1].id


def test_proc_is_mounted_nosuid_nodev_noexec() -> None:
    with background("--nest", "2", "--", "sleep", "30") as run:
        with open(f"/proc/{run.started['host_pid']}/mountinfo") as f:
            procs = [line.split() for line in f if line.split()[4] == "/proc"]
        options = procs[-1][5].split(",")  # the topmost mount at /proc
        assert {"nosuid", "nodev", "noexec"} <= set(options)


def test_command_sees_init_as_pid_1() -> None:
    result = pidns("run", "--nest", "2", "--", "ps", "-eo", "pid=,ppid=,comm=")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["1", "0", "pidns-init"]
    assert ["2", "1", "ps"] in rows
    assert len(rows) == 2


def test_no_init_makes_the_command_pid_1() -> None:
    result = pidns("run", "--no-init", "--nest", "2", "--", "sh", "-c", "echo $$")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
