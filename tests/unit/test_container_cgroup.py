"""Every cgroup layout the runtimes and the kubelet write, v1 and v2, read back as containers."""

from __future__ import annotations

import pytest

from pidns.containers.cgroup import (
    CgroupMatch,
    holds,
    match,
    match_path,
    parse_cgroup,
    systemd_cgroups_path,
)
from pidns.containers.nspawn import machine_name
from tests.containerfix import cgroup_file, cid, container_cgroup, kubelet_pod_path

ID = cid(0xAB)
UID = "0f6e7c2a-1b3d-4e5f-8a9b-0c1d2e3f4a5b"

LAYOUTS = [
    # docker
    (f"/system.slice/docker-{ID}.scope", "docker", ID),
    (f"/docker/{ID}", "docker", ID),
    # podman: systemd root, cgroupfs (this host's), rootless, in a pod, with a container sub-cgroup
    (f"/machine.slice/libpod-{ID}.scope", "podman", ID),
    (f"/libpod_parent/libpod-{ID}", "podman", ID),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope", "podman", ID),
    (f"/machine.slice/machine-libpod_pod_{cid(1)}.slice/libpod-{ID}.scope", "podman", ID),
    (f"/machine.slice/libpod-{ID}.scope/container", "podman", ID),
    # containerd and CRI-O outside kubepods
    (f"/system.slice/cri-containerd-{ID}.scope", "containerd", ID),
    (f"/system.slice/crio-{ID}.scope", "crio", ID),
    # a cgroupfs runc given systemd's SLICE:PREFIX:NAME spelling makes it a directory name
    (
        f"/kubepods-besteffort-pod{UID.replace('-', '_')}.slice:cri-containerd:{ID}",
        "containerd",
        ID,
    ),
    (f"/kubepods-burstable.slice:crio:{ID}", "crio", ID),
    (f"/system.slice:docker:{ID}", "docker", ID),
    # machines (escaped names) and their payload sub-cgroup
    ("/machine.slice/machine-web.scope", "machine", "web"),
    ("/machine.slice/machine-my\\x2dbox.scope/payload", "machine", "my-box"),
    # lxc 4+ and the v1-era layout
    ("/lxc.payload.web1", "lxc", "web1"),
    ("/lxc.payload.web1/init.scope", "lxc", "web1"),
    ("/lxc/web1", "lxc", "web1"),
    # docker inside podman: the inner container
    (f"/libpod_parent/libpod-{cid(2)}/docker/{ID}", "docker", ID),
]
NOT_CONTAINERS = [
    "/",
    "/user.slice/user-0.slice/session-3.scope",
    "/system.slice/docker.service",
    f"/libpod_parent/libpod-conmon-{ID}",
    f"/machine.slice/libpod-conmon-{ID}.scope",
    f"/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/crio-conmon-{ID}.scope",
    "/lxc.monitor.web1",
    "/machine.slice/machine-libpod_pod_abc.slice",
    "/kubepods/burstable",
    f"/kubepods/burstable/pod{UID}",  # the pod-level cgroup holds no task of its own
    f"/not-docker/{ID}",
    "/process_api/9d82af81746cca45fc82fc4b4f8488f7",
]


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize(("path", "runtime", "ident"), LAYOUTS)
def test_layouts(path: str, runtime: str, ident: str, version: str) -> None:
    found = match(cgroup_file(path, version))
    assert found is not None
    assert (found.runtime, found.id, found.pod_uid) == (runtime, ident, None)
    assert found.path == path


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("path", NOT_CONTAINERS)
def test_not_containers(path: str, version: str) -> None:
    assert match(cgroup_file(path, version)) is None


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("driver", ["systemd", "cgroupfs"])
@pytest.mark.parametrize("qos", ["guaranteed", "burstable", "besteffort"])
@pytest.mark.parametrize("runtime", ["containerd", "crio"])
def test_kubelet_layouts(driver: str, qos: str, runtime: str, version: str) -> None:
    path = container_cgroup(driver, runtime, kubelet_pod_path(driver, qos, UID), ID)
    found = match(cgroup_file(path, version))
    # cgroupfs + containerd is a bare id under the pod: the runtime is only known from state
    expected = "cri" if (driver, runtime) == ("cgroupfs", "containerd") else runtime
    assert found == CgroupMatch(expected, ID, UID, qos, path)


def test_kubelet_docker_systemd() -> None:
    path = f"{kubelet_pod_path('systemd', 'burstable', UID)}/docker-{ID}.scope"
    assert match_path(path) == CgroupMatch("docker", ID, UID, "burstable", path)


def test_hybrid_host_reads_the_v1_path() -> None:
    """This machine's layout: the v2 line is '/', the runtime's path is in the v1 lines."""
    data = (
        f"9:name=systemd:/libpod_parent/libpod-{ID}\n4:memory:/libpod_parent/libpod-{ID}\n0::/\n"
    ).encode()
    found = match(data)
    assert found is not None and (found.runtime, found.id) == ("podman", ID)


def test_v2_wins_over_v1() -> None:
    data = f"1:memory:/docker/{cid(3)}\n0::/system.slice/docker-{ID}.scope\n".encode()
    found = match(data)
    assert found is not None and found.id == ID


def test_parse_cgroup_skips_garbage() -> None:
    assert parse_cgroup(b"garbage\n3:cpu:/a\n0::/b\n2:x:relative\n") == [("cpu", "/a"), ("", "/b")]


def test_systemd_cgroups_path() -> None:
    assert (
        systemd_cgroups_path("kubepods-pod1.slice:cri-containerd:abc") == "cri-containerd-abc.scope"
    )
    assert systemd_cgroups_path("system.slice::myunit.scope") == "myunit.scope"
    assert systemd_cgroups_path("/default/web") is None


def test_holds() -> None:
    data = cgroup_file("/default/web", "v1")
    assert holds(data, "/default/web")
    assert not holds(data, "/default/we")
    assert not holds(data, "/other/web")
    assert holds(
        cgroup_file(f"/a.slice/cri-containerd-{ID}.scope", "v2"), f"a.slice:cri-containerd:{ID}"
    )
    assert not holds(data, "/")


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["systemd-nspawn", "-D", "/srv/box", "sleep", "9"], "box"),
        (["systemd-nspawn", "--directory=/srv/box/", "sh"], "box"),
        (["systemd-nspawn", "-M", "web", "-D", "/srv/box"], "web"),
        (["systemd-nspawn", "--register=no", "--machine=web", "-D/srv/box"], "web"),
        (["systemd-nspawn", "-i", "/var/lib/machines/db.raw"], "db"),
        (["systemd-nspawn", "-D", "/srv/box", "sh", "-c", "x -M other"], "box"),
        (["systemd-nspawn", "--quiet"], None),
    ],
)
def test_nspawn_machine_name(argv: list[str], name: str | None) -> None:
    assert machine_name(argv) == name
