"""The resolver on fixture hosts: kubelet/CRI layouts, prefixes, stale state, reused pids."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pidns.containers import ContainerNotRunning, label, resolve_designator
from pidns.containers.state import Roots, StateReader
from pidns.errors import BadDesignator
from pidns.ids import HostPid, NsId
from pidns.model import PidNamespace, Snapshot, Task
from tests.containerfix import (
    Host,
    cgroup_file,
    cid,
    container_cgroup,
    cri_annotations,
    kubelet_pod_path,
    oci_cgroups_path,
)

UID = "5c1a2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def resolve(host: Host, text: str) -> int | None:
    return resolve_designator(text, str(host.proc), host.roots)


def make_pod(
    host: Host,
    runtime: str,
    driver: str,
    version: str,
    qos: str,
    shared: bool = False,
    first_pid: int = 100,
    pod: str = "cart-7f9",
    pod_ns: str = "shop",
    uid: str = UID,
) -> dict[str, int]:
    """A pod as the kubelet and a CRI runtime make it: a pause sandbox and containers app and
    sidecar, each with its own PID namespace unless `shared` (shareProcessNamespace)."""
    pod_path = kubelet_pod_path(driver, qos, uid)
    inos = {}
    sandbox = cid(first_pid % 256)
    for i, name in enumerate([None, "app", "sidecar"]):
        ident = sandbox if name is None else cid((first_pid + i) % 256)
        pid = first_pid + i
        ns = f"{pod}-sandbox" if name is None or shared else f"{pod}-{name}"
        path = container_cgroup(driver, runtime, pod_path, ident)
        host.task(pid, cgroup_file(path, version), ns, comm="pause" if name is None else "sleep")
        kind = "sandbox" if name is None else "container"
        notes = cri_annotations(runtime, kind, pod, pod_ns, uid, sandbox, name)
        spec_path = oci_cgroups_path(driver, runtime, pod_path, ident)
        if runtime == "containerd":
            host.containerd_bundle(ident, notes, spec_path, pid)
        else:
            host.storage_container(ident, f"k8s_{name or 'POD'}_{pod}", notes, pid, spec_path)
        inos[name or "sandbox"] = host.ns(ns)
    return inos


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("driver", ["systemd", "cgroupfs"])
@pytest.mark.parametrize("qos", ["guaranteed", "burstable", "besteffort"])
@pytest.mark.parametrize("runtime", ["containerd", "crio"])
def test_k8s_pods(host: Host, runtime: str, driver: str, version: str, qos: str) -> None:
    inos = make_pod(host, runtime, driver, version, qos)
    assert resolve(host, "k8s:shop/cart-7f9/app") == inos["app"]
    assert resolve(host, "k8s:shop/cart-7f9/sidecar") == inos["sidecar"]
    assert resolve(host, "k8s://shop/cart-7f9/app") == inos["app"]
    with pytest.raises(BadDesignator, match="2 PID namespaces; name one: app, sidecar"):
        resolve(host, "k8s:shop/cart-7f9")
    with pytest.raises(BadDesignator, match="2 PID namespaces"):
        resolve(host, f"k8s-pod:{UID}")
    with pytest.raises(BadDesignator, match=r"has no container 'db' \(it has: app, sidecar\)"):
        resolve(host, "k8s:shop/cart-7f9/db")
    with pytest.raises(BadDesignator, match="no pod 'cart-7f9' in namespace 'default'"):
        resolve(host, "k8s:cart-7f9")
    # and by the runtime's own id
    assert resolve(host, f"{runtime}:{cid(101)[:10]}") == inos["app"]


@pytest.mark.parametrize("runtime", ["containerd", "crio"])
def test_k8s_shared_process_namespace(host: Host, runtime: str) -> None:
    inos = make_pod(host, runtime, "systemd", "v2", "burstable", shared=True)
    assert resolve(host, "k8s:shop/cart-7f9") == inos["sandbox"]
    assert resolve(host, f"k8s-pod:{UID}") == inos["sandbox"]
    assert resolve(host, f"k8s-pod:{UID.replace('-', '_')}") == inos["sandbox"]


def test_k8s_default_namespace_and_one_container(host: Host) -> None:
    pod_path = kubelet_pod_path("cgroupfs", "besteffort", UID)
    ident = cid(7)
    host.task(
        50, cgroup_file(container_cgroup("cgroupfs", "containerd", pod_path, ident), "v1"), "solo"
    )
    notes = cri_annotations("containerd", "container", "web", "default", UID, cid(6), "nginx")
    host.containerd_bundle(ident, notes, f"{pod_path}/{ident}", 50)
    assert resolve(host, "k8s:web") == host.ns("solo")
    assert resolve(host, f"k8s-pod:{UID}") == host.ns("solo")


def test_k8s_pod_without_state_tells_sandbox_by_pause(host: Host, tmp_path: Path) -> None:
    """No state readable: cgroups give the pod's UID; the pause-only container is the sandbox."""
    pod_path = kubelet_pod_path("systemd", "guaranteed", UID)
    host.task(
        60,
        cgroup_file(container_cgroup("systemd", "containerd", pod_path, cid(8)), "v2"),
        "p",
        comm="pause",
    )
    host.task(
        61, cgroup_file(container_cgroup("systemd", "containerd", pod_path, cid(9)), "v2"), "a"
    )
    assert resolve(host, f"k8s-pod:{UID}") == host.ns("a")
    with pytest.raises(BadDesignator, match="no pod"):
        resolve(host, "k8s:shop/x")


def test_k3s_root(host: Host) -> None:
    ident = cid(0x33)
    host.task(70, cgroup_file(f"/kubepods/besteffort/pod{UID}/{ident}", "v1"), "k3s")
    notes = cri_annotations(
        "containerd", "container", "traefik", "kube-system", UID, cid(1), "traefik"
    )
    host.containerd_bundle(
        ident, notes, f"/kubepods/besteffort/pod{UID}/{ident}", 70, root="k3s-containerd"
    )
    assert resolve(host, "k8s:kube-system/traefik/traefik") == host.ns("k3s")


def test_ctr_container_needs_state(host: Host) -> None:
    """ctr names its cgroup /NAMESPACE/ID: only the bundle's cgroupsPath says it is a container."""
    host.task(80, cgroup_file("/default/web", "v1"), "ctr-web")
    assert_unknown = pytest.raises(BadDesignator, match="no containerd container")
    with assert_unknown:
        resolve_designator("containerd:web", str(host.proc), Roots(containerd=()))
    host.containerd_bundle("web", {}, "/default/web", 80, namespace="default")
    assert resolve(host, "containerd:web") == host.ns("ctr-web")
    assert resolve(host, "containerd:default/web") == host.ns("ctr-web")
    with pytest.raises(BadDesignator, match=r"in namespace 'k8s\.io'"):
        resolve(host, "containerd:k8s.io/web")


def podman(host: Host, n: int, name: str, pid: int | None, **kw: float) -> str:
    ident = cid(n)
    notes = {"io.container.manager": "libpod"}
    host.storage_container(ident, name, notes, pid, f"/libpod_parent/libpod-{ident}", **kw)
    return ident


def test_podman_names_prefixes_and_ambiguity(host: Host) -> None:
    a = podman(host, 0xA1, "web", 90)
    b = podman(host, 0xA2, "db", 91)
    host.task(90, cgroup_file(f"/libpod_parent/libpod-{a}", "v1"), "web")
    host.task(91, cgroup_file(f"/libpod_parent/libpod-{b}", "v1"), "db")
    assert resolve(host, "podman:web") == host.ns("web")
    assert resolve(host, "podman:a1a1") == host.ns("web")
    assert resolve(host, f"podman:{b}") == host.ns("db")
    with pytest.raises(
        BadDesignator,
        match=r"matches 2 podman containers: a1a1a1a1a1a1 \(web\), a2a2a2a2a2a2 \(db\)",
    ):
        resolve(host, "podman:a")
    with pytest.raises(
        BadDesignator, match="no podman container named or with an id starting 'nope'"
    ):
        resolve(host, "podman:nope")
    with pytest.raises(BadDesignator, match="no docker container"):
        resolve(host, "docker:web")
    # a name that looks like another's id prefix: the name wins
    c = podman(host, 0xB3, "a2a2", 92)
    host.task(92, cgroup_file(f"/libpod_parent/libpod-{c}", "v1"), "c")
    assert resolve(host, "podman:a2a2") == host.ns("c")


def test_prefix_ambiguity_from_cgroups_alone(host: Host) -> None:
    """No state at all (say, not root): ids come from cgroups, and a prefix must still be unique."""
    host.task(95, cgroup_file(f"/docker/{cid(0xC1)}", "v1"), "x")
    host.task(96, cgroup_file(f"/docker/{'c1' + cid(0xC2)[2:]}", "v1"), "y")
    with pytest.raises(BadDesignator, match="matches 2 docker containers"):
        resolve(host, "docker:c1")
    assert resolve(host, "docker:c1c1") == host.ns("x")


def test_stopped_container(host: Host) -> None:
    """podman leaves its pidfile after stop: the pid is gone, so it is not running (exit 1)."""
    podman(host, 0xD1, "gone", 12345)
    with pytest.raises(
        ContainerNotRunning,
        match=r"'podman:gone' \(d1d1d1d1d1d1 \(gone\)\): not running \(its recorded pid 12345 is gone\)",
    ) as err:
        resolve(host, "podman:gone")
    assert err.value.exit_code == 1


def test_reused_pid_never_resolves(host: Host) -> None:
    """The pidfile was written an hour ago; the process with that pid started a minute ago."""
    ident = podman(host, 0xE1, "old", 200, pid_mtime=time.time() - 3600)
    host.task(
        200, cgroup_file(f"/libpod_parent/libpod-{ident}", "v1"), "new", started=time.time() - 60
    )
    # its live cgroup still names the container: tier 1 is authoritative and resolves it
    assert resolve(host, "podman:old") == host.ns("new")
    # a pid found only through state (a ctr container whose task is gone) must be the same
    # process: job's pid was reused by a process started after init.pid was written, job2's by
    # one started before, but outside job2's cgroup
    host.containerd_bundle(
        "job", {}, "/default/job", 201, namespace="default", pid_mtime=time.time() - 3600
    )
    host.task(201, cgroup_file("/user.slice/other", "v1"), "other", started=time.time() - 60)
    host.containerd_bundle("job2", {}, "/default/job2", 202, namespace="default")
    host.task(202, cgroup_file("/user.slice/other", "v1"), "other", started=time.time() - 60)
    with pytest.raises(ContainerNotRunning, match="pid 201 now belongs to a process started later"):
        resolve(host, "containerd:job")
    with pytest.raises(ContainerNotRunning, match="pid 202 is not in the container's cgroup"):
        resolve(host, "containerd:job2")


def test_recorded_pid_checked_against_cgroup_and_start(host: Host) -> None:
    from pidns.containers.live import Verified, verify

    host.task(300, cgroup_file("/default/job", "v1"), "job", started=time.time() - 600)
    assert isinstance(
        verify(str(host.proc), 300, time.time(), lambda d: b"/default/job" in d), Verified
    )
    late = verify(str(host.proc), 300, time.time() - 3600, lambda d: True)
    assert late == "its recorded pid 300 now belongs to a process started later"
    elsewhere = verify(str(host.proc), 300, None, lambda d: False)
    assert elsewhere == "its recorded pid 300 is not in the container's cgroup"
    assert verify(str(host.proc), 301, None, lambda d: True) == "its recorded pid 301 is gone"


def test_docker_state(host: Host) -> None:
    a, b = cid(0xF1), cid(0xF2)
    host.docker_container(a, "web", 400)
    host.docker_container(b, "stopped", 0, running=False)
    host.task(400, cgroup_file(f"/docker/{a}", "v1"), "dweb")
    assert resolve(host, "docker:web") == host.ns("dweb")
    with pytest.raises(ContainerNotRunning, match="not running"):
        resolve(host, "docker:stopped")


def test_corrupt_state_is_no_claim(host: Host) -> None:
    host.write(f"docker/containers/{cid(5)}/config.v2.json", "{half")
    host.task(410, cgroup_file(f"/docker/{cid(5)}", "v1"), "d5")
    assert resolve(host, "docker:0505") == host.ns("d5")


def test_machine_lxc_cgroup(host: Host) -> None:
    host.task(500, cgroup_file("/machine.slice/machine-my\\x2dbox.scope/payload", "v2"), "box")
    host.task(510, cgroup_file("/lxc.payload.c1", "v2"), "c1")
    host.task(511, cgroup_file("/lxc.monitor.c1", "v2"), "host")
    assert resolve(host, "machine:my-box") == host.ns("box")
    assert resolve(host, "lxc:c1") == host.ns("c1")
    assert resolve(host, "cgroup:/lxc.payload.c1") == host.ns("c1")
    assert resolve(host, "cgroup:/lxc.payload.c1/") == host.ns("c1")
    with pytest.raises(BadDesignator, match="no task is in cgroup /nowhere"):
        resolve(host, "cgroup:/nowhere")
    with pytest.raises(BadDesignator, match="starts with '/'"):
        resolve(host, "cgroup:lxc.payload.c1")
    with pytest.raises(BadDesignator, match="no LXC container named 'c2'"):
        resolve(host, "lxc:c2")


def test_machined_record_and_unregistered_nspawn(host: Host) -> None:
    host.task(600, cgroup_file("/", "v2"), "m1")
    host.write("machines/m1", "NAME=m1\nLEADER=600\nCLASS=container\nSCOPE=machine-m1.scope\n")
    with pytest.raises(ContainerNotRunning, match="machines/m1 is stale"):
        resolve(host, "machine:m1")  # its leader is not in machine-m1.scope
    host.task(
        610,
        cgroup_file("/", "v2"),
        "host",
        comm="systemd-nspawn",
        cmdline=["systemd-nspawn", "--register=no", "-D", "/srv/m2", "sh"],
    )
    host.task(611, cgroup_file("/", "v2"), "m2", ppid=610)
    assert resolve(host, "machine:m2") == host.ns("m2")
    with pytest.raises(BadDesignator, match="systemd-nspawn processes"):
        resolve(host, "machine:m3")


def test_not_a_container_designator() -> None:
    for text in ["web", "@1", "4026531836", "/proc/1/ns/pid", "host", "pid:[1]"]:
        assert resolve_designator(text) is None
    for text in ["docker:", "podman:", "k8s:a/b/c/d", "k8s://a/b", "machine:", "lxc:", "k8s-pod:"]:
        with pytest.raises(BadDesignator):
            resolve_designator(
                text, roots=Roots(docker=(), storage=(), runroot=(), containerd=(), machines=())
            )


def test_unreadable_state_is_said(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a non-root caller meets: the listing is unreadable; the error says so and why."""
    ident = podman(host, 0x77, "web", 700)
    host.task(700, cgroup_file(f"/libpod_parent/libpod-{ident}", "v1"), "w")
    listing = str(host.root / "storage/overlay-containers/containers.json")
    real_open = open

    def deny(path: object, *args: object, **kwargs: object) -> object:
        if str(path) == listing:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", deny)
    with pytest.raises(
        BadDesignator,
        match=r"unreadable: permission denied \(run as root\) \(or ask the runtime with --runtime-cli\)",
    ):
        resolve(host, "podman:web")
    assert resolve(host, "podman:7777") == host.ns("w")  # the id still resolves from cgroups


def snapshot_of(host: Host, namespaces: dict[str, tuple[int, int | None]]) -> Snapshot:
    """A Snapshot over the fixture proc: name -> (init pid, parent name index)."""
    dev = os.stat(host.root / "nsfs").st_dev
    root = PidNamespace(NsId(dev, host.ns("host")), 0, None)
    spaces = {root.id: root}
    tasks = {}
    for name, (init, _parent) in namespaces.items():
        ns = PidNamespace(NsId(dev, host.ns(name)), 1, root.id, init=HostPid(init))
        spaces[ns.id] = ns
        tasks[HostPid(init)] = Task(
            HostPid(init),
            HostPid(init),
            HostPid(1),
            HostPid(0),
            (init, 1),
            (init, 1),
            (init, 1),
            (init, 1),
            (0, 0, 0, 0),
            (0, 0, 0, 0),
            0,
            0,
            "S",
            "sleep",
            ["sleep"],
            0,
            0,
            0,
            1,
            ns.ino,
        )
    return Snapshot(tasks, spaces, root.id, proc=str(host.proc))


def test_label_names_namespaces(host: Host) -> None:
    inos = make_pod(host, "containerd", "systemd", "v1", "burstable")
    ident = podman(host, 0x42, "web", 150)
    host.task(150, cgroup_file(f"/libpod_parent/libpod-{ident}", "v1"), "web")
    snap = snapshot_of(
        host, {"cart-7f9-app": (101, None), "cart-7f9-sandbox": (100, None), "web": (150, None)}
    )
    labels = label(snap, StateReader(host.roots))
    app = labels.by_ns[inos["app"]]
    assert app.to_json() == {
        "runtime": "containerd",
        "id": cid(101),
        "name": "app",
        "pod": "cart-7f9",
        "pod_namespace": "shop",
        "pod_uid": UID,
    }
    assert app.label == "k8s:shop/cart-7f9/app"
    assert labels.by_ns[inos["sandbox"]].label == "k8s:shop/cart-7f9"
    web = labels.by_ns[host.ns("web")]
    assert (web.runtime, web.name, web.label) == ("podman", "web", "podman:web")
    assert labels.own == set(labels.by_ns)
    assert labels.problems == []
