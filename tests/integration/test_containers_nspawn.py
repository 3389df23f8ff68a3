"""Real systemd-nspawn without machined: `machine:NAME` through the nspawn process's command line.

Working flags with no systemd as pid 1 (found by trying): `systemd-nspawn --register=no
--keep-unit -q -D ROOTFS -M NAME CMD` (without --keep-unit it asks systemd for a scope). The
payload's cgroup names no machine here, so pidns finds it as the child of the systemd-nspawn
process whose -M (or -D) names it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.containers_util import (
    check_exec_fuse,
    check_nested,
    check_ps_against_kernel,
    make_rootfs,
    need,
    ns_of,
    pidns,
    pidns_json,
    pidns_mounts,
    wait_for,
)
from tests.integration.runtime_util import nspid

pytestmark = pytest.mark.root


class Machines:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.prefix = f"pidnst-{uuid.uuid4().hex[:8]}"
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], *extra: str) -> tuple[str, int]:
        full = f"{self.prefix}-{name}"
        rootfs = make_rootfs(self.base / name)  # nspawn locks the tree it runs: one each
        p = subprocess.Popen(
            ["systemd-nspawn", "--register=no", "--keep-unit", "-q", *extra, "-D", str(rootfs), "-M", full, *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.running.append(p)

        def payload() -> int | None:
            """nspawn's child once it runs the payload: in a PID namespace of its own and no
            longer nspawn's code (nspawn forks helpers first, which exit)."""
            try:
                own = os.stat(f"/proc/{p.pid}/ns/pid").st_ino
            except OSError:
                return None
            for line in subprocess.run(
                ["ps", "-eo", "pid=,ppid=,comm="], capture_output=True, text=True
            ).stdout.splitlines():
                pid, ppid, comm = line.split(None, 2)
                if int(ppid) != p.pid or comm.startswith(("systemd-nspawn", "(")):
                    continue
                try:
                    if os.stat(f"/proc/{pid}/ns/pid").st_ino != own:
                        return int(pid)
                except OSError:
                    continue
            return None

        return full, wait_for("the machine's payload", payload)


@pytest.fixture(scope="module")
def machines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machines]:
    need("systemd-nspawn")
    m = Machines(Path(tmp_path_factory.mktemp("nspawn")))
    try:
        yield m
    finally:
        for p in m.running:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def web(machines: Machines) -> tuple[str, int]:
    return machines.start("web", ["/bin/sleep", "600"])


def test_ps_matches_the_kernel(web: tuple[str, int]) -> None:
    name, pid = web
    assert nspid(pid)[-1] == 1
    check_ps_against_kernel(f"machine:{name}", pid)


def test_ls_names_it(web: tuple[str, int]) -> None:
    name, pid = web
    rec = {r["id"]: r for r in pidns_json("ls")}[ns_of(pid)]
    assert rec["container"] == {
        "runtime": "machine",
        "id": name,
        "name": name,
        "pod": None,
        "pod_namespace": None,
        "pod_uid": None,
    }


@pytest.mark.fuse
def test_exec_fuse_runs_ps_inside(web: tuple[str, int]) -> None:
    check_exec_fuse(f"machine:{web[0]}", web[1])


def test_nested_pidns_run_shows_both_levels(machines: Machines) -> None:
    binds = [f"--bind-ro={m}" for m in pidns_mounts()]
    started: list[tuple[str, int]] = []

    def start() -> None:
        pass  # the payload itself runs the nested `pidns run`

    argv = [
        "/bin/sh",
        "-c",
        f"{sys.executable} -m pidns.cli.main run -- /bin/sh -c 'sleep 600 & sleep 600' & sleep 600",
    ]
    started.append(machines.start("nest", argv, *binds))
    name, pid = started[0]
    check_nested(f"machine:{name}", pid, start)


def test_unknown_machine(machines: Machines) -> None:
    done = pidns("ps", "--ns", f"machine:{machines.prefix}-none")
    assert done.returncode == 2
    assert "no machine named" in done.stderr and "systemd-nspawn processes" in done.stderr
