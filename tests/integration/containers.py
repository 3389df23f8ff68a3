"""Real podman containers and a real LXCFS for tests: the flags that work on these machines
(runc, cgroupfs, no network, rlimits within the hard limits), an image imported from a
busybox-static rootfs (no registry is reachable), and cleanup of all of it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.integration.containers_util import BUSYBOX, make_rootfs

PODMAN = [
    "podman",
    "--runtime",
    "runc",
    "--cgroup-manager",
    "cgroupfs",
]
RUN_FLAGS = [
    "--network",
    "none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
]


def missing() -> str | None:
    """Why these tests cannot run here, None when they can."""
    if os.geteuid() != 0:
        return "needs root (podman with cgroupfs, lxcfs)"
    for tool in ("podman", "runc", "lxcfs"):
        if shutil.which(tool) is None:
            return f"needs {tool} (scripts/bootstrap.sh installs it)"
    if not os.path.exists(BUSYBOX):
        return "needs busybox-static"
    if not os.path.isdir("/sys/fs/cgroup/memory"):
        return "needs cgroup v1 memory hierarchy (the v2 paths are tested on fixtures)"
    return None


def podman(*args: str, check: bool = True, timeout: float = 60) -> str:
    out = subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and out.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


@contextlib.contextmanager
def busybox_image(workdir: Path) -> Iterator[str]:
    """The runtimes' busybox root, with /lx and /px to bind LXCFS's and pidns's trees on."""
    root = make_rootfs(workdir, "lx", "px")
    tar = workdir / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        t.add(root, arcname=".")
    name = f"localhost/pidns-test-{uuid.uuid4().hex[:8]}:latest"
    subprocess.run(
        [*PODMAN, "import", str(tar), name], capture_output=True, check=True, timeout=120
    )
    try:
        yield name
    finally:
        podman("rmi", "-f", name, check=False)


@contextlib.contextmanager
def container(image: str, *flags: str) -> Iterator[tuple[str, int]]:
    """A running container (sleeping); yields its name and its init's host pid."""
    name = f"pidns-test-{uuid.uuid4().hex[:10]}"
    podman("run", "-d", "--name", name, *RUN_FLAGS, *flags, image, "sleep", "100000")
    try:
        pid = int(podman("inspect", "--format", "{{.State.Pid}}", name).strip())
        yield name, pid
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


def inside(name: str, *argv: str) -> str:
    return podman("exec", name, *argv)


@contextlib.contextmanager
def lxcfs(mountpoint: Path) -> Iterator[Path]:
    """LXCFS itself at mountpoint (the oracle): unmounted lazily before it is killed, or the
    mountpoint is left disconnected."""
    mountpoint.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        ["lxcfs", "-f", "-p", str(mountpoint.parent / "lxcfs.pid"), str(mountpoint)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not (mountpoint / "proc" / "meminfo").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"lxcfs did not start: {proc.stderr.read()!r}")  # type: ignore[union-attr]
            time.sleep(0.05)
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
