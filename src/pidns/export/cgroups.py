"""The pids limit a namespace runs under: the nearest pids.max above its init's cgroup.

A namespace maps to the pids cgroup of its init (the cgroup its forks are charged to, unless a
task moved). The limit that stops those forks is the nearest cgroup at or above that one whose
pids.max is a number; pids.current of that same cgroup is what counts against it.

Both hierarchies are read: cgroup v1's pids controller (`ROOT/pids`) first when it is mounted,
else cgroup v2 (`ROOT` itself, or `ROOT/unified` on hybrid hosts) when its root enables pids.
Paths in /proc/PID/cgroup are relative to the reader's cgroup namespace; a task outside it shows
a path starting with `/..`, which is resolved against where the reader's own cgroup sits in the
mounted hierarchy (found once, by the reader's pid in a cgroup.procs file).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass

from pidns.procfs.reader import read_at

V1 = "v1"
V2 = "v2"
_SEARCH_LIMIT = 20_000  # cgroup directories visited at most while looking for our own


@dataclass(slots=True, frozen=True)
class PidsLimit:
    max: int
    current: int
    cgroup: str  # the limiting cgroup's path inside its hierarchy


@dataclass(slots=True, frozen=True)
class Hierarchy:
    kind: str  # V1 or V2
    mount: str  # the directory the hierarchy is mounted at


def find_hierarchy(root: str) -> Hierarchy | None:
    """The hierarchy holding the pids controller under `root` (usually /sys/fs/cgroup)."""
    if os.path.exists(os.path.join(root, "pids", "cgroup.procs")):
        return Hierarchy(V1, os.path.join(root, "pids"))
    for mount in (root, os.path.join(root, "unified")):
        try:
            with open(os.path.join(mount, "cgroup.controllers")) as f:
                controllers = f.read().split()
        except OSError:
            continue
        if "pids" in controllers:
            return Hierarchy(V2, mount)
    return None


def task_cgroup(proc_fd: int, pid: int, hierarchy: Hierarchy) -> str | None:
    """The path of pid's cgroup in `hierarchy`, as /proc/PID/cgroup tells (None if unreadable)."""
    try:
        data = read_at(proc_fd, f"{pid}/cgroup")
    except OSError:
        return None
    return parse_cgroup(data, hierarchy.kind)


def parse_cgroup(data: bytes, kind: str) -> str | None:
    """The path for the pids controller (v1) or of the unified hierarchy (v2)."""
    for line in data.decode(errors="replace").splitlines():
        ident, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if kind == V2 and ident == "0" and controllers == "":
            return path
        if kind == V1 and "pids" in controllers.split(","):
            return path
    return None


class PidsLimits:
    """Resolves cgroup paths to limits; caches the reader's own place in the hierarchy."""

    def __init__(self, hierarchy: Hierarchy, proc: str = "/proc") -> None:
        self.hierarchy = hierarchy
        self.proc = proc
        self._ns_root: str | None = None
        self._searched = False

    def limit(self, path: str) -> PidsLimit | None:
        """The nearest pids limit at or above the cgroup at `path` (None: no limit, or unknown)."""
        absolute = self._absolute(path)
        if absolute is None:
            return None
        current = absolute
        while True:
            directory = self.hierarchy.mount + ("" if current == "/" else current)
            maximum = _read_number(os.path.join(directory, "pids.max"))
            if maximum is not None:
                used = _read_number(os.path.join(directory, "pids.current"))
                return None if used is None else PidsLimit(maximum, used, current)
            if current == "/":
                return None
            current = posixpath.dirname(current)

    def _absolute(self, path: str) -> str | None:
        if not path.startswith("/"):
            return None
        if path == "/.." or path.startswith("/../"):
            root = self._reader_root()
            if root is None:
                return None
            path = posixpath.normpath(posixpath.join(root, path.lstrip("/")))
            if path.startswith("/.."):  # above the mounted hierarchy: not visible here
                return None
        return posixpath.normpath(path)

    def _reader_root(self) -> str | None:
        """Where this process's cgroup namespace root sits in the mounted hierarchy: the
        directory whose cgroup.procs lists this process, moved up by what /proc/self/cgroup
        says below the namespace root."""
        if self._searched:
            return self._ns_root
        self._searched = True
        try:
            with open(os.path.join(self.proc, "self", "cgroup"), "rb") as f:
                own = parse_cgroup(f.read(), self.hierarchy.kind)
        except OSError:
            return None
        if own is None or own.startswith("/.."):
            return None
        found = _find_pid(self.hierarchy.mount, os.getpid())
        if found is None:
            return None
        depth = 0 if own == "/" else own.strip("/").count("/") + 1
        root = found
        for _ in range(depth):
            root = posixpath.dirname(root)
        self._ns_root = root
        return root


def _find_pid(mount: str, pid: int) -> str | None:
    """The cgroup (path inside the hierarchy) whose cgroup.procs lists pid, breadth first."""
    wanted = str(pid).encode()
    queue = ["/"]
    visited = 0
    while queue and visited < _SEARCH_LIMIT:
        path = queue.pop(0)
        visited += 1
        directory = mount + ("" if path == "/" else path)
        try:
            with open(os.path.join(directory, "cgroup.procs"), "rb") as f:
                if wanted in f.read().split():
                    return path
        except OSError:
            pass
        try:
            entries = os.scandir(directory)
        except OSError:
            continue
        with entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    queue.append(posixpath.join(path, entry.name))
    return None


def _read_number(path: str) -> int | None:
    """An integer file (pids.max, pids.current); None when missing or "max"."""
    try:
        with open(path, "rb") as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
