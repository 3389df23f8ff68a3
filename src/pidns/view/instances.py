"""Instances and views: one instance per namespace, shared by every view (mount) of it.

The registry is what the kernel's struct pid list of proc inodes is for flushing (§22):
it knows every view, so a task's exit is flushed from each instance that could see it. An instance
holds the only references the daemon keeps to its namespace (an nsfs fd and a pidfd of its init);
both are dropped when the init dies, after which the instance shows what the kernel's instance of a
dead namespace shows: only `self` and `thread-self` (docs/kernel-proc.md §19, §20).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from dataclasses import dataclass, field

from pidns.fuse.node import Requester
from pidns.ids import NsId
from pidns.kernel import nsfs, pidfd
from pidns.procfs.parse import stat_start_time
from pidns.procfs.reader import read_at
from pidns.view import rules
from pidns.view.files.procstat import boottime_offset_ns
from pidns.view.files.userids import ReaderIds, parse_id_map
from pidns.view.nsmap import NsMap
from pidns.view.options import ViewOptions
from pidns.view.resources import Subject, task_states

# Reaps remembered per host pid (the generation in a pid directory's key). Only a recent reap
# matters: its generation keeps a task that reuses the pid off nodes of the reaped one still being
# committed. A pid forgotten starts again from 0, which can only repeat keys long flushed.
GENERATIONS_KEPT = 4096


class Instance:
    def __init__(self, ns_fd: int) -> None:
        self.nsmap = NsMap(ns_fd)
        self.id: NsId = self.nsmap.id
        self.views: dict[str, View] = {}
        self.init_host = self.nsmap.to_host(1)
        self.init_pidfd = -1
        if self.init_host:
            with contextlib.suppress(OSError):
                self.init_pidfd = os.pidfd_open(self.init_host)

    @property
    def dead(self) -> bool:
        return self.nsmap.released

    def die(self) -> None:
        """The init is gone: drop every reference that would keep the namespace alive."""
        self.nsmap.release()
        if self.init_pidfd >= 0:
            os.close(self.init_pidfd)
            self.init_pidfd = -1

    def init_gone(self) -> bool:
        return pidfd.reaped(self.init_pidfd)

    def counts(self) -> tuple[int, int]:
        """(running, total) tasks of the namespace, for a virtualized loadavg."""
        return task_states(self.nsmap).processes_running, len(self.nsmap.leaders())

    def subject(self, options: ViewOptions) -> Subject | None:
        """--virtualize: the cgroup of the namespace's init and its tasks; None once it is dead."""
        if self.dead or not self.init_host:
            return None
        try:
            return Subject.of(
                self.init_host, self.nsmap, self.nsmap.proc_fd, options.cpus_from_quota
            )
        except OSError:
            return None

    def uptime(self, host_uptime: bytes) -> bytes:
        """--virtualize: seconds since the namespace's init started (idle time left as the host's)."""
        fields = host_uptime.split()
        if not self.init_host or len(fields) < 2:
            return host_uptime
        try:
            with open(f"/proc/{self.init_host}/stat", "rb") as f:
                start_ticks = stat_start_time(f.read())
        except (OSError, ValueError):
            return host_uptime
        since = max(0.0, float(fields[0]) - start_ticks / os.sysconf("SC_CLK_TCK"))
        return b"%.2f %s\n" % (since, fields[1])


@dataclass(eq=False)
class View:
    id: str
    instance: Instance
    options: ViewOptions
    registry: Registry
    mountpoint: str = ""
    proc_fd: int = field(default=-1)
    # --virtualize: the name, unlisted and known only to the client, of the root's directory
    # of the sysfs files the view renders (served.SYS_FILES); "" for none
    sys_name: str = ""

    def generation(self, host_pid: int) -> int:
        return self.registry.generations.get(host_pid, 0)

    def admits(self, req: Requester) -> bool:
        return rules.admits(self.options, req)

    def reader_map(self, req: Requester) -> NsMap | None:
        """The pid map of the requester's own namespace; None when it is the daemon's."""
        return self.registry.reader_map(req.tid, self.instance)

    def reader_ids(self, req: Requester) -> ReaderIds | None:
        """How the requester's user namespace numbers users; None when it is the daemon's."""
        return self.registry.reader_ids(req.tid)

    def reader_boottime_ns(self, req: Requester) -> int:
        """How far the requester's CLOCK_BOOTTIME runs ahead of the daemon's (ns)."""
        return self.registry.reader_boottime_ns(req.tid)


class Registry:
    """Every instance and view the daemon serves."""

    def __init__(self) -> None:
        self.instances: dict[NsId, Instance] = {}
        self.views: dict[str, View] = {}
        self.generations: dict[int, int] = {}
        self.proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.own_ns = os.stat("/proc/self/ns/pid").st_ino
        self.own_userns = os.readlink("/proc/self/ns/user")
        self.overflow_ids = (_overflow("uid"), _overflow("gid"))
        self._ids = itertools.count(1)
        self._readers: dict[int, NsMap] = {}  # requesters' namespaces, by inode
        self.own_timens = _readlink(f"/proc/{os.getpid()}/ns/time")
        self.own_boottime_ns = _boottime_ns(os.getpid())
        # requesters' time namespaces, by link text: an fd pinning each (so its inode number
        # names no other while kept), and its boottime offset
        self._clocks: dict[str, tuple[int, int]] = {}
        # When nothing reports forks (no proc connector), the leaders' listing is never reused.
        self.fork_events = False

    def open_view(
        self,
        ns_fd: int,
        options: ViewOptions,
        mountpoint: str = "",
        view_id: str | None = None,
        sys_name: str = "",
    ) -> View:
        """A new view of the namespace of ns_fd (taken over), on the namespace's one instance;
        view_id: the id a predecessor daemon gave it (a view taken over keeps its id);
        sys_name: View.sys_name."""
        ns_id = nsfs.identity(ns_fd)
        instance = self.instances.get(ns_id)
        if instance is None or instance.dead:
            instance = Instance(ns_fd)
            instance.nsmap.cacheable = self.fork_events
            self.instances[ns_id] = instance
        else:
            os.close(ns_fd)
        if view_id is None:
            view_id = f"v{next(self._ids)}"
            while view_id in self.views:
                view_id = f"v{next(self._ids)}"
        view = View(view_id, instance, options, self, mountpoint, self.proc_fd, sys_name)
        instance.views[view.id] = view
        self.views[view.id] = view
        return view

    def close_view(self, view_id: str) -> None:
        view = self.views.pop(view_id, None)
        if view is None:
            return
        view.instance.views.pop(view_id, None)
        if not view.instance.views:
            view.instance.die()
            self.instances.pop(view.instance.id, None)
        if not self.views:
            self._drop_clocks()  # nothing left to read: pin no reader's time namespace

    def reader_map(self, tid: int, instance: Instance | None) -> NsMap | None:
        """The pid map of the requester tid's namespace; None when it is the daemon's."""
        try:
            ino = os.stat(f"/proc/{tid}/ns/pid").st_ino if tid else self.own_ns
        except OSError:
            return None
        if ino == self.own_ns:
            return None
        if instance is not None and ino == instance.id.ino and not instance.dead:
            return instance.nsmap
        for other in list(self.instances.values()):
            if other.id.ino == ino and not other.dead:
                return other.nsmap
        cached = self._readers.get(ino)
        if cached is None:
            try:
                cached = NsMap(nsfs.open_ns(f"/proc/{tid}/ns/pid"))
            except Exception:
                return None
            cached.cacheable = self.fork_events
            if len(self._readers) > 64:
                for old in self._readers.values():
                    old.release()
                self._readers.clear()
            self._readers[ino] = cached
        return cached

    def reader_boottime_ns(self, tid: int) -> int:
        """How far the requester tid's CLOCK_BOOTTIME runs ahead of the daemon's, in nanoseconds
        (docs/kernel-proc.md §14b); 0 when it is the daemon's clock or cannot be read. A time
        namespace's offsets are fixed once a task is in it, so they are kept by namespace."""
        if not tid:
            return 0
        link = _readlink(f"/proc/{tid}/ns/time")
        if link is None or link == self.own_timens:
            return 0
        cached = self._clocks.get(link)
        if cached is None:
            try:
                fd = nsfs.open_ns(f"/proc/{tid}/ns/time")
            except OSError:
                return 0
            offset = _boottime_ns(tid)
            if _readlink(f"/proc/{tid}/ns/time") != link or f":[{os.fstat(fd).st_ino}]" not in link:
                os.close(fd)  # the tid changed namespace, or is another task's now
                return 0
            if len(self._clocks) > 64:
                self._drop_clocks()
            cached = self._clocks[link] = (fd, offset)
        return cached[1] - self.own_boottime_ns

    def _drop_clocks(self) -> None:
        for fd, _ in self._clocks.values():
            os.close(fd)
        self._clocks.clear()

    def reader_ids(self, tid: int) -> ReaderIds | None:
        """The id maps of the user namespace of the requester `tid`; None when that namespace is
        the daemon's or cannot be read. Read at each use, never cached: a map is written once,
        but a namespace's inode number may be another's after it dies."""
        if not tid:
            return None
        try:
            # readlink, not stat: a status open pays this, and the link's text costs less than
            # the inode behind it
            if os.readlink(f"/proc/{tid}/ns/user") == self.own_userns:
                return None
            uids = parse_id_map(read_at(self.proc_fd, f"{tid}/uid_map"))
            gids = parse_id_map(read_at(self.proc_fd, f"{tid}/gid_map"))
        except OSError:
            return None
        return ReaderIds(uids, gids, *self.overflow_ids)

    # -- events ------------------------------------------------------------------------------

    def forked(self) -> None:
        for instance in list(self.instances.values()):
            instance.nsmap.invalidate()
        for reader in list(self._readers.values()):
            reader.invalidate()

    def reaped(self, host_pid: int, shown: bool = True) -> list[Instance]:
        """A task is gone for good. When a view has shown it (`shown`), new lookups of its pid get
        new nodes (a reused pid must not reach the old task's files). Returns the instances whose
        init it was, if they were not dead yet."""
        if shown:
            generations = self.generations
            generations[host_pid] = generations.pop(host_pid, 0) + 1  # now the most recent
            if len(generations) > GENERATIONS_KEPT:
                for pid in list(itertools.islice(generations, GENERATIONS_KEPT // 2)):
                    del generations[pid]
        self.forked()
        return self.init_exited(host_pid)

    def init_exited(self, host_pid: int) -> list[Instance]:
        """The instances whose init host_pid is: dead from its exit on (§18), zombie or
        not, so they drop their references to the namespace now."""
        dead = []
        for instance in list(self.instances.values()):
            if not instance.dead and instance.init_host == host_pid:
                instance.die()
                dead.append(instance)
        if dead:
            self.forked()
        return dead

    def close(self) -> None:
        for instance in self.instances.values():
            instance.die()
        for reader in self._readers.values():
            reader.release()
        self._drop_clocks()
        self.instances.clear()
        self.views.clear()
        os.close(self.proc_fd)


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _boottime_ns(tid: int) -> int:
    try:
        with open(f"/proc/{tid}/timens_offsets", "rb") as f:
            return boottime_offset_ns(f.read())
    except OSError:  # no time namespaces: every clock is the host's
        return 0


def _overflow(kind: str) -> int:
    """The id the kernel shows for one a namespace does not map (overflowuid/overflowgid)."""
    try:
        with open(f"/proc/sys/kernel/overflow{kind}", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 65534
