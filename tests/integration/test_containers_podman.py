"""Real podman (Debian's podman + runc): `podman:NAME` designators and container naming.

Flags that work on hosts with cgroup v1 hybrid, low rlimit ceilings and no network (found by
trying): `podman --runtime runc --cgroup-manager cgroupfs run --network none --ulimit
nofile=1024:1024 --ulimit nproc=1024:1024`. crun refuses hybrid cgroups; podman's default
rlimits exceed such hosts' hard limits; without `--network none` it wants a network backend.
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
    check_ls_names,
    check_nested,
    check_ps_against_kernel,
    make_rootfs,
    need,
    pidns,
    pidns_json,
    pidns_mounts,
)
from tests.users import AS_NOBODY, installed_for_users

pytestmark = pytest.mark.root
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
RUN = ["--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def podman(*args: str) -> str:
    done = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class Podman:
    def __init__(self, image: str, prefix: str) -> None:
        self.image = image
        self.prefix = prefix
        self.names: list[str] = []

    def run(
        self, name: str, *extra: str, cmd: tuple[str, ...] = ("sleep", "600")
    ) -> tuple[str, int]:
        full = f"{self.prefix}-{name}"
        self.names.append(full)
        ident = podman("run", "-d", "--name", full, *RUN, *extra, self.image, *cmd)
        return ident, int(podman("inspect", "--format", "{{.State.Pid}}", full))


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    need("podman", "runc")
    prefix = f"pidnst-{uuid.uuid4().hex[:8]}"
    image = f"localhost/{prefix}:1"
    root = make_rootfs(Path(tmp_path_factory.mktemp("podman")))
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(
        [*PODMAN, "import", "-", image], stdin=tar.stdout, check=True, capture_output=True
    )
    tar.wait()
    p = Podman(image, prefix)
    try:
        yield p
    finally:
        for name in p.names:
            subprocess.run([*PODMAN, "rm", "-f", "-t", "0", name], capture_output=True)
        subprocess.run([*PODMAN, "rmi", "-f", image], capture_output=True)


@pytest.fixture(scope="module")
def web(runtime: Podman) -> tuple[str, str, int]:
    ident, pid = runtime.run("web")
    return f"{runtime.prefix}-web", ident, pid


def test_ps_by_name_and_id_matches_the_kernel(web: tuple[str, str, int]) -> None:
    name, ident, pid = web
    check_ps_against_kernel(f"podman:{name}", pid)
    check_ps_against_kernel(f"podman:{ident[:10]}", pid)


def test_ls_names_it(web: tuple[str, str, int]) -> None:
    name, ident, pid = web
    check_ls_names(pid, "podman", ident, name)


@pytest.mark.fuse
def test_exec_fuse_runs_ps_inside(web: tuple[str, str, int]) -> None:
    name, _ident, pid = web
    check_exec_fuse(f"podman:{name}", pid)


def test_ps_columns_and_filter(web: tuple[str, str, int]) -> None:
    name, ident, pid = web
    rows = pidns_json("ps", "--ns", "host", "--container", name)
    assert [r["host_pid"] for r in rows] == [pid]
    assert rows[0]["container"]["id"] == ident
    assert pidns_json("ps", "--ns", "host", "--container", ident[:12])[0]["host_pid"] == pid
    done = pidns("ps", "--ns", "host", "--container", name, "-o", "hostpid,runtime,container,pod")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[1].split() == [str(pid), "podman", name, "-"]


def test_translate_filter_and_which(web: tuple[str, str, int]) -> None:
    name, _ident, pid = web
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pidns.cli.main",
            "translate",
            "--to",
            f"podman:{name}",
            "--field",
            "2",
            "-",
        ],
        input=f"GPU PID MEM\n0 {pid} 10MiB\n0 1 1MiB\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "GPU PID MEM\n0 1 10MiB\n0 - 1MiB\n"
    levels = pidns_json("which", str(pid))[0]["levels"]
    assert [lv["pid"] for lv in levels] == [pid, 1]
    assert levels[1]["container"]["name"] == name


def test_nested_pidns_run_shows_both_levels(runtime: Podman) -> None:
    binds = [a for m in pidns_mounts() for a in ("-v", f"{m}:{m}:ro")]
    _ident, pid = runtime.run("nest", "--cap-add", "SYS_ADMIN", *binds)
    name = f"{runtime.prefix}-nest"

    def start() -> None:
        podman(
            "exec",
            "-d",
            name,
            sys.executable,
            "-m",
            "pidns.cli.main",
            "run",
            "--",
            "sh",
            "-c",
            "sleep 600 & sleep 600",
        )

    check_nested(f"podman:{name}", pid, start)


def test_stopped_unknown_and_unprivileged(runtime: Podman, web: tuple[str, str, int]) -> None:
    ident, _pid = runtime.run("stopped")
    name = f"{runtime.prefix}-stopped"
    podman("stop", "-t", "0", name)
    done = pidns("ps", "--ns", f"podman:{name}")
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"pidns: error: 'podman:{name}' ({ident[:12]} ({name})): not running"
    )
    assert done.stderr.count("\n") == 1
    done = pidns("ps", "--ns", f"podman:{runtime.prefix}-none")
    assert done.returncode == 2
    assert "no podman container named" in done.stderr and "searched the cgroups of" in done.stderr
    assert "state files in /var/lib/containers/storage" in done.stderr
    # not root: names are unreadable, and the error says what was searched and why not
    done = subprocess.run(
        [
            *AS_NOBODY,
            installed_for_users().python,
            "-m",
            "pidns.cli.main",
            "ps",
            "--ns",
            f"podman:{web[0]}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unreadable: permission denied (run as root)" in done.stderr
    assert "--runtime-cli" in done.stderr


def test_runtime_cli_tier(web: tuple[str, str, int]) -> None:
    """Tier 3 by itself: no state roots, so only podman's CLI can tell the name."""
    name, _ident, pid = web
    empty = {"PIDNS_CONTAINERS_STORAGE": "/nonexistent", "PIDNS_CONTAINERS_RUNROOT": "/nonexistent"}
    done = pidns("ps", "--ns", f"podman:{name}", "--json", env=empty)
    assert done.returncode == 2, done.stderr
    # podman is called without the cgroupfs flags here: inspect only reads its database
    rows = pidns_json("ps", "--ns", f"podman:{name}", "--runtime-cli", env=empty)
    assert rows[0]["host_pid"] == pid


def test_export_labels_it_for_promql_joins(web: tuple[str, str, int], tmp_path: Path) -> None:
    """pidns export's info series names the container, with kube-state-metrics' id form."""
    from prometheus_client.parser import text_string_to_metric_families

    name, ident, pid = web
    out = tmp_path / "pidns.prom"
    done = subprocess.run(
        [sys.executable, "-m", "pidns.cli.main", "export", "--textfile", str(out), "--once"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    ns = str(os.stat(f"/proc/{pid}/ns/pid").st_ino)
    infos = [
        s.labels
        for family in text_string_to_metric_families(out.read_text())
        for s in family.samples
        if s.name == "pidns_namespace_info" and s.labels["ns"] == ns
    ]
    assert len(infos) == 1
    assert infos[0]["runtime"] == "podman" and infos[0]["container"] == name
    assert infos[0]["container_id"] == f"podman://{ident}"
