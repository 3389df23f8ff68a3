"""Fixture hosts for the container resolver: a proc tree and the runtimes' state, in a temp dir.

The layouts are the ones the kubelet and the runtimes write (kubelet's cgroup_manager_linux.go
and pod_container_manager; containerd's CRI plugin annotations and task bundles; CRI-O's
containers/storage userdata). A fake /proc/PID has cgroup, stat, comm, cmdline and ns/pid, where
ns/pid is a hard link to one file per fixture namespace: its inode plays the namespace's inode.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from pidns.containers.state import Roots

V1_CONTROLLERS = ["cpu,cpuacct", "memory", "pids", "blkio", "devices", "freezer", "cpuset"]
BTIME = 1_700_000_000


def cgroup_file(path: str, version: str) -> bytes:
    """/proc/PID/cgroup for a task at `path`: v2 one line; v1 every controller plus
    name=systemd, and the empty v2 line of a hybrid host."""
    if version == "v2":
        return f"0::{path}\n".encode()
    lines = [f"{i + 1}:{c}:{path}" for i, c in enumerate(V1_CONTROLLERS)]
    lines.append(f"{len(lines) + 1}:name=systemd:{path}")
    lines.append("0::/")
    return ("\n".join(reversed(lines)) + "\n").encode()


def kubelet_pod_path(driver: str, qos: str, uid: str) -> str:
    """The pod-level cgroup the kubelet makes (systemd: '-' of the UID written '_')."""
    if driver == "systemd":
        u = uid.replace("-", "_")
        if qos == "guaranteed":
            return f"/kubepods.slice/kubepods-pod{u}.slice"
        return f"/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{u}.slice"
    return f"/kubepods/pod{uid}" if qos == "guaranteed" else f"/kubepods/{qos}/pod{uid}"


def container_cgroup(driver: str, runtime: str, pod_path: str, ident: str) -> str:
    prefix = {"containerd": "cri-containerd", "crio": "crio"}[runtime]
    if driver == "systemd":
        return f"{pod_path}/{prefix}-{ident}.scope"
    return f"{pod_path}/{ident}" if runtime == "containerd" else f"{pod_path}/crio-{ident}"


def oci_cgroups_path(driver: str, runtime: str, pod_path: str, ident: str) -> str:
    """linux.cgroupsPath as the CRI runtime writes it into the spec."""
    prefix = {"containerd": "cri-containerd", "crio": "crio"}[runtime]
    if driver == "systemd":
        return f"{pod_path.rsplit('/', 1)[1]}:{prefix}:{ident}"
    return container_cgroup(driver, runtime, pod_path, ident)


def cid(n: int) -> str:
    return f"{n:02x}" * 32


@dataclass
class Host:
    root: Path
    next_ino: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.proc.mkdir(parents=True)
        (self.root / "nsfs").mkdir()
        (self.proc / "stat").write_text(f"cpu  1 2 3\nbtime {BTIME}\n")

    @property
    def proc(self) -> Path:
        return self.root / "proc"

    @property
    def roots(self) -> Roots:
        r = self.root
        return Roots(
            docker=(str(r / "docker"),),
            storage=(str(r / "storage"),),
            runroot=(str(r / "runstorage"),),
            containerd=(str(r / "containerd"), str(r / "k3s-containerd")),
            machines=(str(r / "machines"),),
        )

    def ns(self, name: str) -> int:
        """The inode that plays namespace `name`."""
        path = self.root / "nsfs" / name
        if not path.exists():
            path.write_text(name)
        return path.stat().st_ino

    def task(
        self,
        pid: int,
        cgroup: bytes,
        ns: str,
        comm: str = "sleep",
        ppid: int = 1,
        started: float | None = None,
        cmdline: list[str] | None = None,
        state: str = "S",
    ) -> None:
        """A task; `started` is wall-clock seconds (default: 60 s ago)."""
        started = time.time() - 60 if started is None else started
        ticks = int((started - BTIME) * os.sysconf("SC_CLK_TCK"))
        d = self.proc / str(pid)
        (d / "ns").mkdir(parents=True)
        (d / "cgroup").write_bytes(cgroup)
        (d / "comm").write_text(comm + "\n")
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in (cmdline or [comm])) + b"\0")
        rest = [state, str(ppid), str(pid), str(pid), "0", "-1"] + ["0"] * 11 + ["1", "0"]
        rest += [str(ticks)] + ["0"] * 10
        (d / "stat").write_text(f"{pid} ({comm}) " + " ".join(rest) + "\n")
        self.ns(ns)
        os.link(self.root / "nsfs" / ns, d / "ns" / "pid")

    def write(self, rel: str, data: str | bytes, mtime: float | None = None) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        path.write_bytes(data)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path

    # -- runtimes' state -------------------------------------------------------------------

    def containerd_bundle(
        self,
        ident: str,
        annotations: dict[str, str],
        cgroups_path: str,
        pid: int | None,
        namespace: str = "k8s.io",
        root: str = "containerd",
        pid_mtime: float | None = None,
    ) -> None:
        base = f"{root}/io.containerd.runtime.v2.task/{namespace}/{ident}"
        spec = {
            "ociVersion": "1.1.0",
            "annotations": annotations,
            "linux": {"cgroupsPath": cgroups_path},
        }
        self.write(f"{base}/config.json", json.dumps(spec))
        if pid is not None:
            self.write(f"{base}/init.pid", str(pid), pid_mtime)

    def storage_container(
        self,
        ident: str,
        name: str,
        annotations: dict[str, str],
        pid: int | None,
        cgroups_path: str = "",
        pid_mtime: float | None = None,
    ) -> None:
        listing = self.root / "storage/overlay-containers/containers.json"
        entries = json.loads(listing.read_text()) if listing.exists() else []
        entries.append({"id": ident, "names": [name], "image": "e" * 64, "layer": "f" * 64})
        self.write("storage/overlay-containers/containers.json", json.dumps(entries))
        spec = {"annotations": annotations, "linux": {"cgroupsPath": cgroups_path}}
        self.write(f"storage/overlay-containers/{ident}/userdata/config.json", json.dumps(spec))
        if pid is not None:
            self.write(
                f"runstorage/overlay-containers/{ident}/userdata/pidfile", str(pid), pid_mtime
            )

    def docker_container(
        self,
        ident: str,
        name: str,
        pid: int,
        running: bool = True,
        labels: dict[str, str] | None = None,
    ) -> None:
        config = {
            "ID": ident,
            "Name": f"/{name}",
            "State": {"Running": running, "Pid": pid if running else 0},
            "Config": {"Labels": labels or {}},
        }
        self.write(f"docker/containers/{ident}/config.v2.json", json.dumps(config))


def cri_annotations(
    runtime: str, kind: str, pod: str, pod_ns: str, uid: str, sandbox_id: str, name: str | None
) -> dict[str, str]:
    """The annotations containerd's CRI plugin / CRI-O put on a container's spec."""
    if runtime == "containerd":
        notes = {
            "io.kubernetes.cri.container-type": kind,
            "io.kubernetes.cri.sandbox-id": sandbox_id,
            "io.kubernetes.cri.sandbox-name": pod,
            "io.kubernetes.cri.sandbox-namespace": pod_ns,
            "io.kubernetes.cri.sandbox-uid": uid,
        }
        if name is not None:
            notes["io.kubernetes.cri.container-name"] = name
        return notes
    notes = {
        "io.kubernetes.cri-o.ContainerType": kind,
        "io.kubernetes.cri-o.SandboxID": sandbox_id,
        "io.kubernetes.pod.name": pod,
        "io.kubernetes.pod.namespace": pod_ns,
        "io.kubernetes.pod.uid": uid,
    }
    if name is not None:
        notes["io.kubernetes.container.name"] = name
    return notes
