"""The nodes of a view: what each path is, what it lists and contains, read from the host's proc tree.

A node answers in the kernel's terms (OSError with the kernel's errno); who may see what comes from
access.py and rules.py, what rendered files contain from the table in served.py. The FUSE server
only maps nodes to inodes; a node's owner is the host pid of the task whose directory holds it.

Pid directories pin their task with a directory fd of the host's /proc/PID (opened at first use):
files opened through it describe that task or fail with ESRCH once it is reaped, like the kernel's.
"""

from __future__ import annotations

import errno
import os
import stat as st

from pidns.fuse.node import Absent, Attr, Node, Requester, fail
from pidns.procfs.parse import stat_start_time
from pidns.procfs.reader import read_all, read_at
from pidns.view import access, rules, served
from pidns.view.instances import View
from pidns.view.rules import Creds

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_GONE = (errno.ENOENT, errno.ESRCH)
_RETIRED = -2  # PidDir._fd of a reaped task that had none open: never open one
# Files the kernel serves by offset rather than as text, which a snapshot taken at open cannot
# hold: unbounded (pagemap spans the whole address space, kcore all memory, kpage* every page
# frame), failing at offset 0 (mem) or blocking until something happens (kmsg). Reading them whole
# would make the daemon allocate without end or wedge a request thread: the view refuses them.
UNSERVED = frozenset({"mem", "pagemap", "kcore", "kmsg", "kpagecount", "kpageflags", "kpagecgroup"})
# The largest snapshot a passed-through file may take (maps/smaps of a huge process stay below).
SNAPSHOT_LIMIT = 1 << 24
# Directories of links the kernel's procfs follows to the object itself (docs/kernel-proc.md §17b).
# Through FUSE the kernel follows a link's text: `pid:[4026531836]` or `pipe:[1234]`, relative, is
# a LOOKUP of that name in the same directory, answered with the object's own attributes.
FOLLOWED_DIRS = frozenset({"ns", "fd"})
_LINKS_KEPT = 1024  # per task: target text -> the link that named it, filled by readlink


def _task_error(err: OSError) -> OSError:
    """What a failure inside a task's directory tells its reader: a task that is gone is ESRCH, as
    the kernel answers through a stale directory (docs/kernel-proc.md §4)."""
    return fail(errno.ESRCH if err.errno in _GONE else (err.errno or errno.EIO))


# -- the root ------------------------------------------------------------------------------------


class Root(Node):
    __slots__ = ("key", "view")  # tens of thousands live at once: no per-node dict

    def __init__(self, view: View) -> None:
        self.view = view
        self.key = ("root", view.id)

    def attr(self, req: Requester) -> Attr:
        return Attr.of(os.stat("/proc"))  # st_nlink counts every process, as the kernel's does

    def _visible(self, host_pid: int, req: Requester) -> bool:
        view = self.view
        return access.visible(
            view.options, req, lambda: access.task_creds_or_none(view.proc_fd, host_pid)
        )

    def listing(self, req: Requester) -> list[tuple[int, str, Node]]:
        view = self.view
        fixed = rules.top_level_names(os.listdir("/proc"), view.options)
        pids = [pid for pid, host in view.instance.nsmap.leaders() if self._visible(host, req)]
        out: list[tuple[int, str, Node]] = []
        for cookie, name in rules.root_listing(fixed, pids):
            try:
                out.append((cookie, name, self.lookup_unchecked(name, req)))
            except OSError:
                continue  # vanished meanwhile
        return out

    def lookup(self, name: str, req: Requester) -> Node:
        pid = rules.pid_of_name(name)
        if pid is not None:
            host = self.view.instance.nsmap.to_host(pid)
            if not host or not self._visible(host, req):
                raise fail(errno.ENOENT)
        return self.lookup_unchecked(name, req)

    def lookup_unchecked(self, name: str, req: Requester) -> Node:
        view = self.view
        if rules.numeric(name):  # "01", 2**64: no pid, and never the host's entry
            pid = rules.pid_of_name(name)
            host = view.instance.nsmap.to_host(pid) if pid is not None else 0
            if pid is None or not host:
                raise fail(errno.ENOENT)
            return PidDir(view, pid, host, None)
        if name in (rules.SELF, rules.THREAD_SELF):
            return SelfLink(view, name == rules.THREAD_SELF)
        if view.sys_name and name == view.sys_name:  # never listed: the root lists the kernel's
            return SysDir(view, ())
        if view.options.subset_pid:
            raise fail(errno.ENOENT)
        return passthrough(view, None, name)

    def restore(self, name: str, identity: int) -> Node:
        return _restore_task_entry(self, name, identity)


class SelfLink(Node):
    __slots__ = ("key", "thread", "view")  # tens of thousands live at once: no per-node dict

    def __init__(self, view: View, thread: bool) -> None:
        self.view = view
        self.thread = thread
        self.key = ("self", view.id, thread)

    def attr(self, req: Requester) -> Attr:
        return Attr(st.S_IFLNK | 0o777, 1, 0, 0)

    def readlink(self, req: Requester) -> bytes:
        nsmap = self.view.instance.nsmap
        tgid = nsmap.tgid_to_ns(req.tid)
        target = (
            rules.thread_self_target(tgid, nsmap.to_ns(req.tid))
            if self.thread
            else rules.self_target(tgid)
        )
        if target is None:
            raise fail(errno.ENOENT)
        return target.encode()


# -- the sysfs files of --virtualize, under the root's unlisted View.sys_name -----------------


class SysDir(Node):
    """A directory on the way to a file of served.SYS_FILES (path: its components under /sys).
    The client binds those files over /sys in a command's private mount namespace only; the
    proc tree's listing stays the kernel's."""

    __slots__ = ("key", "path", "view")

    def __init__(self, view: View, path: tuple[str, ...]) -> None:
        self.view = view
        self.path = path
        self.key = ("sys", view.id, path)

    def attr(self, req: Requester) -> Attr:
        return Attr(st.S_IFDIR | 0o555, 2, 0, 0)

    def _names(self) -> list[str]:
        depth = len(self.path)
        names = []
        for rel in served.SYS_FILES:
            parts = tuple(rel.split("/"))
            if parts[:depth] == self.path and len(parts) > depth and parts[depth] not in names:
                names.append(parts[depth])
        return names

    def lookup(self, name: str, req: Requester) -> Node:
        if name not in self._names():
            raise Absent()
        path = (*self.path, name)
        rel = "/".join(path)
        return SysFile(self.view, rel) if rel in served.SYS_FILES else SysDir(self.view, path)

    def listing(self, req: Requester) -> list[tuple[int, str, Node]]:
        return [(i + 1, name, self.lookup(name, req)) for i, name in enumerate(self._names())]


class SysFile(Node):
    """/sys/REL rendered from the namespace's cgroup (the host's once the namespace is dead)."""

    __slots__ = ("key", "rel", "view")

    def __init__(self, view: View, rel: str) -> None:
        self.view = view
        self.rel = rel
        self.key = ("sys", view.id, rel)

    def attr(self, req: Requester) -> Attr:
        try:
            return Attr.of(os.stat(f"/sys/{self.rel}"))
        except OSError:
            return Attr(st.S_IFREG | 0o444, 1, 0, 0)

    def content(self, req: Requester) -> bytes:
        with open(f"/sys/{self.rel}", "rb") as f:
            host = f.read()
        subject = self.view.instance.subject(self.view.options)
        return host if subject is None else served.SYS_FILES[self.rel](subject, host)


# -- pid directories ---------------------------------------------------------------------------


class PidDir(Node):
    """/N (leader or, by lookup only, any thread) or /N/task/T."""

    __slots__ = (
        "_fd",
        "group",
        "host_pid",
        "key",
        "links",
        "ns_pid",
        "view",
    )  # tens of thousands live at once: no per-node dict

    def __init__(self, view: View, ns_pid: int, host_pid: int, group: PidDir | None) -> None:
        self.view = view
        self.ns_pid = ns_pid
        self.host_pid = host_pid
        self.group = group  # the /N directory when this is /N/task/T
        # Both numbers: the host pid alone may already be another task's (pid_max is often 32768)
        # while the reap of the last one is still on its way to the view.
        self.key = ("pid", view.id, host_pid, ns_pid, group is not None, view.generation(host_pid))
        self._fd = -1
        self.links: dict[str, str] | None = None  # FOLLOWED_DIRS links read: target -> link

    @property
    def owner(self) -> int:
        return self.host_pid

    @property
    def fd(self) -> int:
        if self._fd < 0:
            if self._fd == _RETIRED:
                raise fail(errno.ESRCH)
            try:
                if self.group is None:
                    fd = os.open(str(self.host_pid), _DIR, dir_fd=self.view.proc_fd)
                else:  # the group's fd pins the process: its task/ holds only its threads
                    fd = os.open(f"task/{self.host_pid}", _DIR, dir_fd=self.group.fd)
            except OSError as err:
                raise _task_error(err) from None
            if self.group is None and self.view.instance.nsmap.to_ns(self.host_pid) != self.ns_pid:
                os.close(fd)  # the host pid was reused since it was translated: not our task
                raise fail(errno.ESRCH)
            self._fd = fd
        return self._fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def stale(self) -> bool:
        return self._fd >= 0 and self.reaped()

    def reaped(self) -> bool:
        """Whether the task is reaped: its directory (opened now if need be) answers nothing."""
        try:
            os.stat(".", dir_fd=self.fd)
        except OSError:
            return True
        return False

    def retire(self) -> None:
        # An open fd stays: it pins the reaped task, so reads through it give ESRCH, and closing
        # it under a concurrent request could hand its number to another file.
        if self._fd == -1:
            self._fd = _RETIRED

    def read(self, name: str) -> bytes:
        try:
            return read_at(self.fd, name)
        except OSError as err:
            raise _task_error(err) from None

    def creds(self) -> Creds:
        try:
            return access.creds_at(self.fd)
        except OSError as err:
            raise _task_error(err) from None
        except ValueError:  # cut short as the task died
            raise fail(errno.ESRCH) from None

    def attr(self, req: Requester) -> Attr:
        return Attr.of(os.fstat(self.fd))

    def check_open_dir(self, req: Requester) -> None:
        code = access.pid_errno(self.view.options, req, self.creds)
        if code:
            raise fail(code)

    def lookup(self, name: str, req: Requester) -> Node:
        self.check_open_dir(req)
        try:
            return self._child(name)
        except OSError as err:
            if err.errno == errno.ENOENT:  # not ESRCH: the task is there, the name is not
                raise Absent() from None
            raise

    def _child(self, name: str) -> Node:
        if name == "task" and self.group is None:
            return TaskDir(self)
        if name in served.TASK_FILES:
            if name in served.THREAD_ONLY and self.group is None:
                raise fail(errno.ENOENT)
            return Rendered(self, name)
        return passthrough(self.view, self, name)

    def listing(self, req: Requester) -> list[tuple[int, str, Node]]:
        self.check_open_dir(req)
        out: list[tuple[int, str, Node]] = []
        for i, name in enumerate(os.listdir(self.fd)):
            try:
                out.append((i + 1, name, self._child(name)))
            except OSError:
                continue
        return out

    def identity(self) -> int:
        """The task's start time and host pid: a daemon taking over the view never takes another
        task that reuses the pid for this one (see pidns.fuse.tablefile)."""
        try:
            start = stat_start_time(self.read("stat"))
        except ValueError:
            raise fail(errno.ESRCH) from None
        return (start << 22 | self.host_pid & 0x3FFFFF) & 0xFFFFFFFFFFFFFFFF


def _restore_task_entry(directory: Node, name: str, identity: int) -> Node:
    """A name a predecessor daemon gave an inode, found again: a pid directory that is gone or is
    another task's now answers ESRCH from then on, as the kernel's stale /proc/N does."""
    try:
        return Node.restore(directory, name, identity)
    except OSError as err:
        if rules.numeric(name):
            raise fail(errno.ESRCH) from None
        raise fail(err.errno or errno.ESTALE) from None


class TaskDir(Node):
    __slots__ = ("key", "task")  # tens of thousands live at once: no per-node dict

    def __init__(self, task: PidDir) -> None:
        self.task = task
        self.key = ("task", task.key)

    @property
    def owner(self) -> int:
        return self.task.host_pid

    def attr(self, req: Requester) -> Attr:
        return Attr.of(os.stat("task", dir_fd=self.task.fd))

    def check_open_dir(self, req: Requester) -> None:
        self.task.check_open_dir(req)

    def lookup(self, name: str, req: Requester) -> Node:
        self.check_open_dir(req)
        nsmap = self.task.view.instance.nsmap
        tid = rules.pid_of_name(name)
        host = nsmap.to_host(tid) if tid is not None else 0
        if tid is None or not host:
            raise fail(errno.ENOENT)
        node = PidDir(self.task.view, tid, host, self.task)
        try:
            node.fd  # noqa: B018 - ENOENT when the thread belongs to another group
        except OSError:
            raise fail(errno.ENOENT) from None
        return node

    def listing(self, req: Requester) -> list[tuple[int, str, Node]]:
        self.check_open_dir(req)
        nsmap = self.task.view.instance.nsmap
        out: list[tuple[int, str, Node]] = []
        try:
            fd = os.open("task", _DIR, dir_fd=self.task.fd)
            try:
                names = os.listdir(fd)
            finally:
                os.close(fd)
        except OSError as err:
            raise _task_error(err) from None
        for i, name in enumerate(names):  # thread-list order, as the kernel lists it
            ns_tid = nsmap.to_ns(int(name))
            if ns_tid:
                out.append(
                    (i + 1, str(ns_tid), PidDir(self.task.view, ns_tid, int(name), self.task))
                )
        return out

    def restore(self, name: str, identity: int) -> Node:
        return _restore_task_entry(self, name, identity)


class Rendered(Node):
    """A per-task file whose bytes name pids, rendered for the namespace at open."""

    __slots__ = ("key", "name", "task")  # tens of thousands live at once: no per-node dict

    def __init__(self, task: PidDir, name: str) -> None:
        self.task = task
        self.name = name
        self.key = ("rendered", task.key, name)

    @property
    def owner(self) -> int:
        return self.task.host_pid

    def attr(self, req: Requester) -> Attr:
        try:
            return Attr.of(os.stat(self.name, dir_fd=self.task.fd, follow_symlinks=False))
        except OSError as err:
            raise _task_error(err) from None

    def content(self, req: Requester) -> bytes:
        try:
            return served.TASK_FILES[self.name](self.task, req)
        except ValueError:  # no number in the namespace (any more)
            raise fail(errno.ESRCH) from None


# -- everything passed through -------------------------------------------------------------------


def passthrough(view: View, task: PidDir | None, rel: str) -> Node:
    """The host's node at rel (under the task's directory, or the top of /proc)."""
    if task is None:
        render = served.top_renderer(rel, view.options.virtualize)
        if render is not None:
            return Special(view, rel, render)
    return Pass(view, task, rel)


class Pass(Node):
    __slots__ = ("key", "rel", "task", "view")  # tens of thousands live at once: no per-node dict

    def __init__(self, view: View, task: PidDir | None, rel: str) -> None:
        self.view = view
        self.task = task
        self.rel = rel
        self.key = ("pass", view.id if task is None else task.key, rel)
        self._lstat()  # ENOENT (ESRCH) now rather than at the first use

    @property
    def owner(self) -> int | None:
        return None if self.task is None else self.task.host_pid

    def _base(self) -> int:
        return self.view.proc_fd if self.task is None else self.task.fd

    def _lstat(self) -> os.stat_result:
        try:
            return os.stat(self.rel, dir_fd=self._base(), follow_symlinks=False)
        except OSError as err:
            raise self._err(err) from None

    def _err(self, err: OSError) -> OSError:
        if self.task is not None and err.errno in _GONE and self.task.reaped():
            return fail(errno.ESRCH)  # gone with its task, not never there (ENOENT)
        return fail(err.errno or errno.EIO)

    def _guard(self, req: Requester) -> None:
        if self.task is None:
            return
        self.task.check_open_dir(req)
        first = self.rel.split("/", 1)[0]
        if (
            req.uid != 0
            and first in rules.PTRACE_READ_FILES | rules.PTRACE_READ_LINKS | rules.PTRACE_READ_DIRS
        ):
            code = rules.task_entry_errno(first, req, self.task.creds())
            if code:
                raise fail(code)
        if first == "stack" and req.uid != 0:
            raise fail(errno.EACCES)

    def attr(self, req: Requester) -> Attr:
        return Attr.of(self._lstat())

    def lookup(self, name: str, req: Requester) -> Node:
        self._guard(req)
        if self.task is not None and ":" in name and self.rel in FOLLOWED_DIRS:
            return self._followed(self.task, name, req)
        return passthrough(self.view, self.task, f"{self.rel}/{name}")

    def _followed(self, task: PidDir, target: str, req: Requester) -> Node:
        """The object a link of this directory names by `target` (its readlink came first, as
        the kernel reads a link before following it)."""
        if self.rel == "ns" and req.uid != 0 and not rules.may_ptrace_read(req, task.creds()):
            raise fail(errno.EACCES)
        link = (task.links or {}).get(target)
        try:
            if link is None or os.readlink(link, dir_fd=task.fd) != target:
                raise fail(errno.ENOENT)
        except OSError as err:
            raise self._err(err) from None
        return Followed(task, link, target)

    def check_open_dir(self, req: Requester) -> None:
        self._guard(req)

    def listing(self, req: Requester) -> list[tuple[int, str, Node]]:
        self._guard(req)
        try:
            fd = os.open(self.rel, _DIR, dir_fd=self._base())
            try:
                names = os.listdir(fd)
            finally:
                os.close(fd)
        except OSError as err:
            raise self._err(err) from None
        out: list[tuple[int, str, Node]] = []
        for i, name in enumerate(names):
            try:
                out.append((i + 1, name, passthrough(self.view, self.task, f"{self.rel}/{name}")))
            except OSError:
                continue
        return out

    def readlink(self, req: Requester) -> bytes:
        self._guard(req)
        if self.task is not None and req.uid != 0:
            first = self.rel.split("/", 1)[0]
            linked = first in rules.PTRACE_READ_LINK_DIRS and "/" in self.rel
            if linked and not rules.may_ptrace_read(req, self.task.creds()):
                raise fail(errno.EACCES)
        try:
            target = os.readlink(self.rel, dir_fd=self._base())
        except OSError as err:
            raise self._err(err) from None
        task = self.task
        if task is not None and ":" in target and self.rel.split("/", 1)[0] in FOLLOWED_DIRS:
            links = task.links
            if links is None or len(links) >= _LINKS_KEPT:
                links = task.links = {}
            links[target] = self.rel
        return target.encode(errors="surrogateescape")

    def content(self, req: Requester) -> bytes:
        self._guard(req)
        if self.rel.rsplit("/", 1)[-1] in UNSERVED:
            raise fail(errno.EPERM)
        try:
            return _read_bounded(self._base(), self.rel)
        except OSError as err:
            raise self._err(err) from None


class Followed(Node):
    """What a link of ns/ or fd/ points at (docs/kernel-proc.md §17b): stat() shows the object's
    inode number, type and mode, as the kernel's procfs does by following the link itself. The
    object is not handed out: an open through the view fails (ENXIO), except that a pipe's FIFO
    type makes the kernel open a FIFO of the view's own."""

    __slots__ = ("key", "link", "task")

    def __init__(self, task: PidDir, link: str, target: str) -> None:
        self.task = task
        self.link = link
        self.key = ("followed", task.key, link, target)

    @property
    def owner(self) -> int:
        return self.task.host_pid

    def attr(self, req: Requester) -> Attr:
        try:
            s = os.stat(self.link, dir_fd=self.task.fd)
        except OSError as err:
            raise _task_error(err) from None
        mode = s.st_mode
        if not st.S_IFMT(mode):  # an anonymous inode has no type, which FUSE cannot answer
            mode |= st.S_IFREG
        return Attr(mode, s.st_nlink, s.st_uid, s.st_gid, s.st_size, s.st_mtime_ns, s.st_ino)

    def content(self, req: Requester) -> bytes:
        raise fail(errno.ENXIO)


def _read_bounded(dir_fd: int, rel: str) -> bytes:
    """A whole host file, or EFBIG past SNAPSHOT_LIMIT (never an unbounded allocation)."""
    fd = os.open(rel, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        return read_all(fd, limit=SNAPSHOT_LIMIT)
    finally:
        os.close(fd)


class Special(Node):
    """A top-level file whose content follows the namespace or the reader (served.TOP_FILES)."""

    __slots__ = ("key", "rel", "render", "view")  # tens of thousands live at once: no per-node dict

    def __init__(self, view: View, rel: str, render: served.TopRenderer) -> None:
        self.view = view
        self.rel = rel
        self.render = render
        self.key = ("special", view.id, rel)

    def attr(self, req: Requester) -> Attr:
        return Attr.of(os.stat(self.rel, dir_fd=self.view.proc_fd))

    def content(self, req: Requester) -> bytes:
        return self.render(self.view, read_at(self.view.proc_fd, self.rel), req)
