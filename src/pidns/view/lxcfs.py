"""The tree `pidns lxcfs` serves: LXCFS's layout, each file rendered for whoever reads it.

    proc/{meminfo,cpuinfo,stat,uptime,loadavg,swaps,diskstats}
    sys/devices/system/cpu/online

As LXCFS decides, a reader sees the cgroup of its own PID namespace's init, or its own cgroup
when it shares the daemon's namespace (a process on the host). Readable by every user: the files
hold nothing a reader could not learn from its own cgroup. The renderers are served.py's.
"""

from __future__ import annotations

import errno
import os
import stat as st
import time

from pidns.fuse.node import Absent, Attr, Node, Requester, fail
from pidns.procfs import held
from pidns.view import served
from pidns.view.files.loadavg import render_virtual_loadavg
from pidns.view.instances import Registry
from pidns.view.resources import Subject

PROC_FILES = ("meminfo", "cpuinfo", "stat", "uptime", "loadavg", "swaps", "diskstats")
SYS_PATH = ("sys", "devices", "system", "cpu")
_DIR_MODE = st.S_IFDIR | 0o555
_FILE_MODE = st.S_IFREG | 0o444


class Tree:
    """What every node of one `pidns lxcfs` mount shares."""

    def __init__(self, registry: Registry, tree_id: str, cpus_from_quota: bool = False) -> None:
        self.registry = registry
        self.id = tree_id
        self.cpus_from_quota = cpus_from_quota
        self.mtime_ns = time.time_ns()  # the tree's files all show when it was mounted

    def subject(self, req: Requester) -> Subject:
        """The requester's subject; ESRCH when it is gone (0: the kernel did not say who)."""
        registry = self.registry
        tid = req.tid or os.getpid()
        nsmap = registry.reader_map(tid, None) if req.tid else None
        try:
            if nsmap is None:  # on the host: its own cgroup (LXCFS: "shared pid namespace")
                return Subject.of(tid, None, registry.proc_fd, self.cpus_from_quota)
            init = nsmap.to_host(1)
            if not init:
                raise fail(errno.ESRCH)
            return Subject.of(init, nsmap, registry.proc_fd, self.cpus_from_quota)
        except OSError as err:
            if err.errno in (errno.ENOENT, errno.ESRCH):
                raise fail(errno.ESRCH) from None
            raise


class Dir(Node):
    __slots__ = ("entries", "key", "tree")

    def __init__(self, tree: Tree, path: tuple[str, ...], entries: dict[str, Node]) -> None:
        self.tree = tree
        self.entries = entries
        self.key = ("lxcfs", tree.id, path)

    def attr(self, req: Requester) -> Attr:
        subdirs = sum(isinstance(n, Dir) for n in self.entries.values())
        return Attr(_DIR_MODE, 2 + subdirs, 0, 0, 0, self.tree.mtime_ns)

    def lookup(self, name: str, req: Requester) -> Node:
        node = self.entries.get(name)
        if node is None:
            raise Absent()
        return node

    def listing(self, req: Requester) -> list[tuple[int, str, Node]]:
        return [(i + 1, name, node) for i, (name, node) in enumerate(self.entries.items())]


class File(Node):
    __slots__ = ("host_path", "key", "name", "render", "tree")

    def __init__(
        self, tree: Tree, name: str, host_path: str, render: served.ResourceRenderer | None
    ) -> None:
        self.tree = tree
        self.name = name
        self.host_path = host_path  # under the host's /proc (sysfs files: an absolute path)
        self.render = render
        self.key = ("lxcfs", tree.id, host_path)

    def attr(self, req: Requester) -> Attr:
        # The size of the host's file, as LXCFS reports it (a rendered file is no longer than
        # the host's: fewer CPUs, smaller numbers): readers that copy with sendfile (busybox
        # cat) stop at the size, and procfs's 0 would make them read nothing.
        try:
            size = len(self._host())
        except OSError:
            size = 0
        return Attr(_FILE_MODE, 1, 0, 0, size, self.tree.mtime_ns)

    def _host(self) -> bytes:
        path = self.host_path
        return held.read(path if path.startswith("/") else f"/proc/{path}")

    def content(self, req: Requester) -> bytes:
        subject = self.tree.subject(req)
        host = self._host()
        if self.render is not None:
            return self.render(subject, host)
        # loadavg: the host's averages (LXCFS without -l shows them too), the reader's
        # namespace's running/total and last pid
        nsmap = subject.nsmap
        if nsmap is None:
            return host
        running, total = subject.counts()
        return render_virtual_loadavg(host, running, total, nsmap.last_pid())


def build(registry: Registry, tree_id: str, cpus_from_quota: bool = False) -> Dir:
    tree = Tree(registry, tree_id, cpus_from_quota)
    proc: dict[str, Node] = {
        name: File(tree, name, name, served.RESOURCE_FILES.get(name)) for name in PROC_FILES
    }
    node: Node = Dir(
        tree,
        SYS_PATH,
        {
            "online": File(
                tree,
                "online",
                "/sys/devices/system/cpu/online",
                served.SYS_FILES["devices/system/cpu/online"],
            )
        },
    )
    for depth in range(len(SYS_PATH) - 1, 0, -1):
        node = Dir(tree, SYS_PATH[:depth], {SYS_PATH[depth]: node})
    return Dir(tree, (), {"proc": Dir(tree, ("proc",), proc), "sys": node})
