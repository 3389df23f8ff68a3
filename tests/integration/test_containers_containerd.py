"""Real containerd driven by `ctr`, its daemon started by this module and stopped after.

Working setup with no systemd as pid 1, cgroup v1 hybrid and no network (found by trying):
`containerd --root D/root --state D/state --address D/sock`, containers made with
`ctr -a D/sock run -d [OPTIONS] --rootfs ROOTFS ID /bin/sleep 600` (no image: the busybox rootfs directly;
no PATH in a spec without an image, so commands are absolute). ctr's default spec asks for
RLIMIT_NOFILE 1024 and a fresh network namespace, which such hosts allow. Its containers sit in
the cgroup /NAMESPACE/ID, which no layout names: pidns recognises it from the task bundle's
cgroupsPath under PIDNS_CONTAINERD_STATE=D/state.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.containers_util import (
    check_exec_fuse,
    check_ls_names,
    check_nested,
    check_ps_against_kernel,
    make_rootfs,
    need,
    pidns,
    pidns_mounts,
    wait_for,
)

pytestmark = pytest.mark.root


class Ctr:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.sock = str(base / "sock")
        self.env = {"PIDNS_CONTAINERD_STATE": str(base / "state")}
        self.prefix = f"pidnst-{uuid.uuid4().hex[:8]}"
        self.rootfs = make_rootfs(base)
        self.background: list[subprocess.Popen[bytes]] = []

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            ["ctr", "-a", self.sock, *args], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def run(self, name: str, *extra: str) -> tuple[str, int]:
        full = f"{self.prefix}-{name}"
        self("run", "-d", *extra, "--rootfs", str(self.rootfs), full, "/bin/sleep", "600")
        rows = [line.split() for line in self("task", "ls").splitlines()[1:]]
        return full, int(next(r[1] for r in rows if r[0] == full))


@pytest.fixture(scope="module")
def ctr() -> Iterator[Ctr]:
    need("containerd", "ctr", "runc")
    base = Path(tempfile.mkdtemp(prefix="pidns-ctrd-", dir="/tmp"))
    c = Ctr(base)
    log = open(base / "log", "wb")  # noqa: SIM115 - closed at teardown
    daemon = subprocess.Popen(
        ["containerd", "--root", str(base / "root"), "--state", str(base / "state"), "--address", c.sock],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for("containerd", lambda: daemon.poll() is not None or subprocess.run(
            ["ctr", "-a", c.sock, "version"], capture_output=True).returncode == 0, timeout=60)  # fmt: skip
        if daemon.poll() is not None:
            pytest.fail(f"containerd exited: {(base / 'log').read_text()[-2000:]}")
        yield c
    finally:
        for p in c.background:
            p.kill()
            p.wait()
        tasks = subprocess.run(
            ["ctr", "-a", c.sock, "task", "ls", "-q"], capture_output=True, text=True
        )
        for ident in tasks.stdout.split():
            subprocess.run(
                ["ctr", "-a", c.sock, "task", "kill", "-s", "KILL", ident], capture_output=True
            )
            subprocess.run(
                ["ctr", "-a", c.sock, "task", "delete", "-f", ident], capture_output=True
            )
        ids = subprocess.run(["ctr", "-a", c.sock, "c", "ls", "-q"], capture_output=True, text=True)
        for ident in ids.stdout.split():
            subprocess.run(["ctr", "-a", c.sock, "c", "rm", ident], capture_output=True)
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        subprocess.run(["umount", "-R", "-l", str(base / "state")], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def web(ctr: Ctr) -> tuple[str, int]:
    return ctr.run("web")


def test_ps_matches_the_kernel(ctr: Ctr, web: tuple[str, int]) -> None:
    name, pid = web
    check_ps_against_kernel(f"containerd:{name}", pid, ctr.env)
    check_ps_against_kernel(f"containerd:default/{name}", pid, ctr.env)


def test_ls_names_it(ctr: Ctr, web: tuple[str, int]) -> None:
    name, pid = web
    check_ls_names(pid, "containerd", name, None, ctr.env)


@pytest.mark.fuse
def test_exec_fuse_runs_ps_inside(ctr: Ctr, web: tuple[str, int]) -> None:
    check_exec_fuse(f"containerd:{web[0]}", web[1], ctr.env)


def test_nested_pidns_run_shows_both_levels(ctr: Ctr) -> None:
    binds = [
        a
        for m in pidns_mounts()
        for a in ("--mount", f"type=bind,src={m},dst={m},options=rbind:ro")
    ]
    name, pid = ctr.run("nest", "--privileged", *binds)

    def start() -> None:
        argv = ["ctr", "-a", ctr.sock, "task", "exec", "--exec-id", "nest", name, sys.executable,
                "-m", "pidns.cli.main", "run", "--", "/bin/sh", "-c", "sleep 600 & sleep 600"]  # fmt: skip
        ctr.background.append(
            subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )

    check_nested(f"containerd:{name}", pid, start, ctr.env)


def test_stopped_and_unknown(ctr: Ctr) -> None:
    name, _pid = ctr.run("stopped")
    ctr("task", "kill", "-s", "KILL", name)
    wait_for("the task's end", lambda: "STOPPED" in ctr("task", "ls"))
    done = pidns("ps", "--ns", f"containerd:{name}", env=ctr.env)
    assert done.returncode == 1, done.stderr
    assert "not running" in done.stderr
    done = pidns("ps", "--ns", f"containerd:{ctr.prefix}-none", env=ctr.env)
    assert done.returncode == 2
    assert f"state files in {ctr.base}/state" in done.stderr
