"""Where a process's cgroups are: /proc/PID/cgroup resolved against the cgroup mounts.

v1 ("N:memory:/a/b") has one hierarchy per mount, each with its controllers; v2 ("0::/a/b") one
unified hierarchy whose controllers its root's cgroup.controllers lists. A hybrid machine has
both: v1 controllers, and a v2 hierarchy with none, which still has pressure files and cpu.stat.
A Cgroup maps each controller to a directory; `unified` is the v2 directory whatever it controls.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from pidns.procfs import held

# The controllers the readers use; v1 names, v2 calls blkio "io".
CONTROLLERS = ("memory", "cpu", "cpuacct", "cpuset", "blkio", "pids")
UNIFIED = "unified"
LOCATED_KEPT = 256  # distinct /proc/PID/cgroup texts remembered by System.of_text


@dataclass(frozen=True, slots=True)
class Mount:
    """A cgroup mount: the hierarchy's path shown at its mountpoint (mountinfo's root field)."""

    root: str
    mountpoint: str
    v2: bool
    controllers: frozenset[str] = frozenset()  # v1: from the super options; v2: filled by caller


@dataclass(frozen=True, slots=True)
class Dir:
    """One cgroup directory: `path` on this machine, `top` the mount it lies in (walks stop there)."""

    path: str
    top: str
    v2: bool

    def file(self, name: str) -> str:
        return f"{self.path}/{name}"

    def up(self) -> Iterator[Dir]:
        """This directory and each ancestor up to the hierarchy's mount, nearest first."""
        path = self.path
        while True:
            yield Dir(path, self.top, self.v2)
            if path == self.top or len(path) <= len(self.top):
                return
            path = os.path.dirname(path)

    @property
    def is_top(self) -> bool:
        return self.path == self.top


@dataclass(frozen=True)
class Cgroup:
    """A process's cgroups: controller -> directory; UNIFIED -> the v2 directory, if any."""

    dirs: Mapping[str, Dir] = field(default_factory=dict)
    paths: Mapping[str, str] = field(
        default_factory=dict
    )  # controller -> path as the process's line says

    def get(self, controller: str) -> Dir | None:
        return self.dirs.get(controller)

    @property
    def unified(self) -> Dir | None:
        return self.dirs.get(UNIFIED)

    def at_root(self) -> bool:
        """Whether every resource controller puts the process in its hierarchy's root cgroup."""
        own = [d for c, d in self.dirs.items() if c in CONTROLLERS or c == UNIFIED]
        return all(d.is_top for d in own)


def _unescape(text: str) -> str:
    """mountinfo's octal escapes (\\040 for a space)."""
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1 : i + 4].isdigit():
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: bytes) -> list[Mount]:
    """The cgroup and cgroup2 mounts of a /proc/PID/mountinfo (v2 controllers left empty)."""
    mounts = []
    for raw in text.decode(errors="surrogateescape").splitlines():
        left, sep, right = raw.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        tail = right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        root, mountpoint = _unescape(fields[3]), _unescape(fields[4])
        if tail[0] == "cgroup2":
            mounts.append(Mount(root, mountpoint, True))
            continue
        opts = set(tail[2].split(","))
        controllers = frozenset(o for o in opts if o in CONTROLLERS or o.startswith("name="))
        mounts.append(Mount(root, mountpoint, False, controllers))
    return mounts


def parse_proc_cgroup(text: bytes) -> dict[str, str]:
    """/proc/PID/cgroup as controller -> path; the v2 line under UNIFIED."""
    out: dict[str, str] = {}
    for raw in text.decode(errors="surrogateescape").splitlines():
        parts = raw.split(":", 2)
        if len(parts) != 3:
            continue
        _id, names, path = parts
        if not names:
            out[UNIFIED] = path
            continue
        for name in names.split(","):
            out[name] = path
    return out


def _under(mount: Mount, path: str) -> str | None:
    """The directory of `path` (a hierarchy path) under the mount, None when outside its root."""
    root = mount.root.rstrip("/")
    if path != root and not path.startswith(root + "/") and root:
        return None
    rest = path[len(root) :]
    return mount.mountpoint.rstrip("/") + rest if rest != "/" else mount.mountpoint.rstrip("/")


def locate(paths: Mapping[str, str], mounts: list[Mount]) -> Cgroup:
    """The directories of a process's cgroups (paths from parse_proc_cgroup). A controller on
    a v1 hierarchy is read there; one the v2 hierarchy has (pure v2) is read in the v2 one."""
    dirs: dict[str, Dir] = {}
    for mount in sorted(mounts, key=lambda m: m.v2):  # v1 first: it wins on a hybrid machine
        top = mount.mountpoint.rstrip("/") or "/"
        if not mount.v2:
            for controller in mount.controllers:
                path = paths.get(controller)
                where = _under(mount, path) if path is not None else None
                if where is not None:
                    dirs.setdefault(controller, Dir(where, top, False))
            continue
        path = paths.get(UNIFIED)
        where = _under(mount, path) if path is not None else None
        if where is None or UNIFIED in dirs:
            continue
        d = dirs[UNIFIED] = Dir(where, top, True)
        for controller in mount.controllers:
            # v2 names: io does blkio's accounting; cpu's cpu.stat cpuacct's
            for name in _V2_SERVES.get(controller, (controller,)):
                dirs.setdefault(name, d)
    return Cgroup(dirs, dict(paths))


_V2_SERVES = {"io": ("blkio",), "cpu": ("cpu", "cpuacct")}


def read_text(path: str) -> str | None:
    """A cgroup file's text, None when it is missing or unreadable (a controller not there)."""
    try:
        return held.read(path).decode()
    except (OSError, UnicodeDecodeError):
        return None


def v2_controllers(mountpoint: str) -> frozenset[str]:
    text = read_text(f"{mountpoint}/cgroup.controllers")
    return frozenset(text.split()) if text else frozenset()


class System:
    """The cgroup mounts as one process (the reader: the daemon, a test) sees them."""

    def __init__(self, mountinfo: bytes | None = None) -> None:
        if mountinfo is None:
            with open("/proc/self/mountinfo", "rb") as f:
                mountinfo = f.read()
        mounts = []
        for m in parse_mountinfo(mountinfo):
            if m.v2:
                m = Mount(m.root, m.mountpoint, True, v2_controllers(m.mountpoint))
            mounts.append(m)
        self.mounts = mounts
        self._located: dict[bytes, Cgroup] = {}

    @classmethod
    def from_mounts(cls, mounts: list[Mount]) -> System:
        """A System over given mounts (v2 controllers already filled in): fixture trees."""
        system = cls.__new__(cls)
        system.mounts = list(mounts)
        system._located = {}
        return system

    def of_text(self, proc_cgroup: bytes) -> Cgroup:
        """The cgroups a /proc/PID/cgroup text names. The same text always locates the same
        directories, and a virtualised file is rendered from it at every open: remembered."""
        cgroup = self._located.get(proc_cgroup)
        if cgroup is None:
            cgroup = locate(parse_proc_cgroup(proc_cgroup), self.mounts)
            if len(self._located) >= LOCATED_KEPT:
                self._located.clear()
            self._located[proc_cgroup] = cgroup
        return cgroup

    def of_pid(self, pid: int, proc: str = "/proc") -> Cgroup:
        """pid's cgroups; OSError when the process is gone."""
        with open(f"{proc}/{pid}/cgroup", "rb") as f:
            return self.of_text(f.read())
