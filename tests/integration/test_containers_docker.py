"""Real docker.io, its daemon started by this module and stopped after: `docker:NAME`, and
`containerd:moby/ID` through the containerd dockerd starts for itself.

dockerd flags that work with no systemd as pid 1, cgroup v1 hybrid, low rlimit ceilings and no
network (found by trying): `dockerd --data-root D/data --exec-root D/exec -H unix://D/sock
--pidfile D/pid --bridge none --iptables=false --ip6tables=false --ip-masq=false --storage-driver
vfs --default-ulimit nofile=1024:1024 --default-ulimit nproc=1024:1024`, containers run with
`--network none`. Its cgroup driver is then cgroupfs: containers are in /docker/ID. pidns finds
that daemon's state with PIDNS_DOCKER_ROOT=D/data and PIDNS_CONTAINERD_STATE=D/exec/containerd/daemon.
"""

from __future__ import annotations

import os
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


class Docker:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.sock = f"unix://{base}/sock"
        self.env = {
            "PIDNS_DOCKER_ROOT": str(base / "data"),
            "PIDNS_CONTAINERD_STATE": str(base / "exec/containerd/daemon"),
        }
        self.prefix = f"pidnst-{uuid.uuid4().hex[:8]}"
        self.image = f"{self.prefix}:1"

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            ["docker", "-H", self.sock, *args], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def run(self, name: str, *extra: str) -> tuple[str, str, int]:
        full = f"{self.prefix}-{name}"
        ident = self(
            "run", "-d", "--name", full, "--network", "none", *extra, self.image, "sleep", "600"
        )
        return full, ident, int(self("inspect", "--format", "{{.State.Pid}}", full))


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    need("dockerd", "docker", "containerd", "runc")
    base = Path(tempfile.mkdtemp(prefix="pidns-docker-", dir="/tmp"))  # socket paths stay short
    d = Docker(base)
    log = open(base / "log", "wb")  # noqa: SIM115 - closed at teardown
    daemon = subprocess.Popen(
        ["dockerd", "--data-root", str(base / "data"), "--exec-root", str(base / "exec"),
         "-H", d.sock, "--pidfile", str(base / "pid"), "--bridge", "none", "--iptables=false",
         "--ip6tables=false", "--ip-masq=false", "--storage-driver", "vfs",
         "--default-ulimit", "nofile=1024:1024", "--default-ulimit", "nproc=1024:1024"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for("dockerd", lambda: subprocess.run(
            ["docker", "-H", d.sock, "info"], capture_output=True
        ).returncode == 0 or daemon.poll() is not None, timeout=60)  # fmt: skip
        if daemon.poll() is not None:
            pytest.fail(f"dockerd exited: {(base / 'log').read_text()[-2000:]}")
        root = make_rootfs(base)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["docker", "-H", d.sock, "import", "-", d.image], stdin=tar.stdout, check=True,
            capture_output=True,
        )  # fmt: skip
        tar.wait()
        yield d
    finally:
        ids = subprocess.run(["docker", "-H", d.sock, "ps", "-aq"], capture_output=True, text=True)
        if ids.stdout.split():
            subprocess.run(
                ["docker", "-H", d.sock, "rm", "-f", *ids.stdout.split()], capture_output=True
            )
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        subprocess.run(["umount", "-R", "-l", str(base / "exec")], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def web(docker: Docker) -> tuple[str, str, int]:
    return docker.run("web")


def test_ps_by_name_matches_the_kernel(docker: Docker, web: tuple[str, str, int]) -> None:
    name, ident, pid = web
    check_ps_against_kernel(f"docker:{name}", pid, docker.env)
    check_ps_against_kernel(f"docker:{ident[:10]}", pid, docker.env)
    # the same task through the containerd dockerd runs: namespace moby, id = docker's id
    check_ps_against_kernel(f"containerd:moby/{ident[:10]}", pid, docker.env)


def test_ls_names_it(docker: Docker, web: tuple[str, str, int]) -> None:
    name, ident, pid = web
    check_ls_names(pid, "docker", ident, name, docker.env)


@pytest.mark.fuse
def test_exec_fuse_runs_ps_inside(docker: Docker, web: tuple[str, str, int]) -> None:
    check_exec_fuse(f"docker:{web[0]}", web[2], docker.env)


def test_nested_pidns_run_shows_both_levels(docker: Docker) -> None:
    binds = [a for m in pidns_mounts() for a in ("-v", f"{m}:{m}:ro")]
    name, _ident, pid = docker.run("nest", "--cap-add", "SYS_ADMIN", *binds)

    def start() -> None:
        docker("exec", "-d", name, sys.executable, "-m", "pidns.cli.main", "run", "--",
               "sh", "-c", "sleep 600 & sleep 600")  # fmt: skip

    check_nested(f"docker:{name}", pid, start, docker.env)


def test_stopped_and_unknown(docker: Docker) -> None:
    name, ident, _pid = docker.run("stopped")
    docker("stop", "-t", "0", name)
    done = pidns("ps", "--ns", f"docker:{name}", env=docker.env)
    assert done.returncode == 1, done.stderr
    assert f"'docker:{name}' ({ident[:12]} ({name})): not running" in done.stderr
    done = pidns("ps", "--ns", f"docker:{docker.prefix}-none", env=docker.env)
    assert done.returncode == 2
    assert f"state files in {docker.base}/data" in done.stderr
    assert os.path.isdir(docker.base / "data/containers")
