"""Which container a cgroup path belongs to: every layout the runtimes and the kubelet write.

Pure functions over the bytes of /proc/PID/cgroup. No daemon, no root: the file is readable by
anyone, and the kernel writes it, so it cannot be stale. What a path can tell is the runtime, the
container id (or the machine's / LXC container's name) and, under kubepods, the pod's UID and QoS
class. Names of docker/podman/CRI containers are in the runtimes' state (pidns.containers.state).

Layouts (v1 hierarchies and the v2 one carry the same paths; systemd driver | cgroupfs driver):
  docker        /system.slice/docker-ID.scope             | /docker/ID
  podman        /machine.slice/libpod-ID.scope[/container] | /libpod_parent/libpod-ID
                rootless: /user.slice/user-U.slice/user@U.service/user.slice/libpod-ID.scope
                pods:     /machine.slice/machine-libpod_pod_POD.slice/libpod-ID.scope
                not the container: libpod-conmon-ID.scope (conmon, in the host's namespace)
  containerd    .../cri-containerd-ID.scope  | /kubepods/.../pod<UID>/ID  | ctr: /NAMESPACE/ID
                (a cgroupfs runc handed a systemd-style "SLICE:cri-containerd:ID" makes that
                 the directory's name; accepted too, as are ":crio:" and ":docker:")
  cri-o         .../crio-ID.scope            | /kubepods/.../pod<UID>/crio-ID
                not the container: crio-conmon-ID.scope
  kubepods      /kubepods.slice/kubepods-pod<UID_>.slice/...                     (guaranteed)
                /kubepods.slice/kubepods-{burstable,besteffort}.slice/kubepods-{qos}-pod<UID_>.slice/...
                /kubepods/pod<UID>/...  /kubepods/{burstable,besteffort}/pod<UID>/...
                (the systemd driver writes the UID's '-' as '_')
  machine       /machine.slice/machine-NAME.scope[/payload]  (NAME systemd-escaped: \\x2d is '-')
  lxc           /lxc.payload.NAME[/...] (LXC 4+)  | /lxc/NAME  (not the container: lxc.monitor.NAME)

A ctr container's /NAMESPACE/ID is only recognisable with containerd's state, which names the
cgroup path it asked for (see state.py); the cgroup layer alone calls it unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEX64 = r"[0-9a-f]{64}"
_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"

# One component of a path -> (runtime, id). Order matters only for conmon exclusions, which
# must be tried before the general forms.
_NOT_CONTAINERS = re.compile(r"(?:libpod-conmon|crio-conmon)-.*|lxc\.monitor\..*")
_COMPONENT = [
    (re.compile(rf"docker-({_HEX64})\.scope"), "docker"),
    (re.compile(rf"libpod-({_HEX64})(?:\.scope)?"), "podman"),
    (re.compile(rf"cri-containerd-({_HEX64})\.scope"), "containerd"),
    (re.compile(rf"crio-({_HEX64})(?:\.scope)?"), "crio"),
    (re.compile(r"[^:/]*:cri-containerd:([^:/]+)"), "containerd"),
    (re.compile(r"[^:/]*:crio:([^:/]+)"), "crio"),
    (re.compile(r"[^:/]*:docker:([^:/]+)"), "docker"),
    (re.compile(r"lxc\.payload\.(.+)"), "lxc"),
]
_MACHINE = re.compile(r"machine-(.+)\.scope")
_BARE_ID = re.compile(_HEX64)
_POD_CGROUPFS = re.compile(rf"pod({_UID})")
_POD_SYSTEMD = re.compile(rf"kubepods(?:-(burstable|besteffort))?-pod({_UID})\.slice")


@dataclass(frozen=True, slots=True)
class CgroupMatch:
    """What one cgroup path says about the container holding a task."""

    runtime: str  # docker | podman | containerd | crio | cri (a kubelet path, runtime unknown)
    # | machine | lxc
    id: str  # container id; for machine and lxc, the name
    pod_uid: str | None = None  # with '-' separators, as the API server spells it
    qos: str | None = None  # guaranteed | burstable | besteffort, under kubepods
    path: str = ""  # the cgroup path it was read from

    @property
    def name(self) -> str | None:
        """Machines and LXC containers are named by their cgroup; the others are not."""
        return self.id if self.runtime in ("machine", "lxc") else None


def parse_cgroup(data: bytes) -> list[tuple[str, str]]:
    """/proc/PID/cgroup -> [(controllers, path)]: '' for the v2 hierarchy ("0::/path"),
    'name=systemd', 'memory', 'cpu,cpuacct'... for v1 ones. Malformed lines are skipped."""
    found = []
    for line in data.decode(errors="surrogateescape").splitlines():
        _hid, sep, rest = line.partition(":")
        controllers, sep2, path = rest.partition(":")
        if sep and sep2 and path.startswith("/"):
            found.append((controllers, path))
    return found


def unescape_unit(name: str) -> str:
    """systemd's unit-name escaping undone: '\\x2d' -> '-', and so on."""
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), name)


def match_path(path: str) -> CgroupMatch | None:
    """The container a cgroup path belongs to: the deepest container component wins (a
    container inside a container belongs to the inner one), None for no container."""
    parts = [p for p in path.split("/") if p]
    pod_uid: str | None = None
    qos: str | None = None
    for i, part in enumerate(parts):
        m = _POD_SYSTEMD.fullmatch(part)
        if m is not None:
            qos = m.group(1) or "guaranteed"
            pod_uid = m.group(2).replace("_", "-")
            continue
        m = _POD_CGROUPFS.fullmatch(part)
        if m is not None and "kubepods" in parts[:i]:
            before = parts[i - 1]
            qos = before if before in ("burstable", "besteffort") else "guaranteed"
            pod_uid = m.group(1).replace("_", "-")
    for i in range(len(parts) - 1, -1, -1):
        found = _component(parts, i)
        if found is not None:
            runtime, ident = found
            return CgroupMatch(runtime, ident, pod_uid, qos, path)
    return None


def _component(parts: list[str], i: int) -> tuple[str, str] | None:
    part = parts[i]
    if _NOT_CONTAINERS.fullmatch(part):
        return None
    for pattern, runtime in _COMPONENT:
        m = pattern.fullmatch(part)
        if m is not None:
            return runtime, m.group(1)
    parent = parts[i - 1] if i > 0 else ""
    m = _MACHINE.fullmatch(part)
    if m is not None and parent == "machine.slice":
        return "machine", unescape_unit(m.group(1))
    if parent == "lxc" and i == 1:
        return "lxc", part
    if _BARE_ID.fullmatch(part):
        if parent == "docker":
            return "docker", part
        if _POD_CGROUPFS.fullmatch(parent) and "kubepods" in parts[:i]:
            return "cri", part
    return None


def preferred_paths(entries: list[tuple[str, str]]) -> list[str]:
    """Paths in the order to trust them: v2's, then name=systemd's, then the v1 controllers'."""
    rank = {"": 0, "name=systemd": 1}
    ordered = sorted(entries, key=lambda e: rank.get(e[0], 2))
    seen: list[str] = []
    for _controllers, path in ordered:
        if path not in seen:
            seen.append(path)
    return seen


def match(data: bytes) -> CgroupMatch | None:
    """The container /proc/PID/cgroup's bytes place the task in, or None.

    On hybrid hosts v2's hierarchy may hold everything at "/" while the v1 ones carry the
    runtime's path, so every hierarchy is looked at, the v2 one first."""
    for path in preferred_paths(parse_cgroup(data)):
        found = match_path(path)
        if found is not None:
            return found
    return None


def systemd_cgroups_path(spec: str) -> str | None:
    """An OCI cgroupsPath in systemd's "SLICE:PREFIX:NAME" form -> the path's last component
    runc makes of it ("PREFIX-NAME.scope"); None when it is a plain path."""
    parts = spec.split(":")
    if len(parts) != 3 or spec.startswith("/"):
        return None
    _slice, prefix, name = parts
    return f"{prefix}-{name}.scope" if prefix else name


def holds(data: bytes, cgroups_path: str) -> bool:
    """Whether /proc/PID/cgroup's bytes place the task in (or below) the cgroup that an OCI
    spec's cgroupsPath asked for: a plain path is matched as a suffix of the task's path (the
    runtime may sit below a parent the reader cannot see), systemd's form by its scope."""
    scope = systemd_cgroups_path(cgroups_path)
    wanted = [scope] if scope is not None else [p for p in cgroups_path.split("/") if p]
    if not wanted:
        return False
    for _controllers, path in parse_cgroup(data):
        parts = [p for p in path.split("/") if p]
        for start in range(len(parts) - len(wanted) + 1):
            if parts[start : start + len(wanted)] == wanted:
                return True
    return False
