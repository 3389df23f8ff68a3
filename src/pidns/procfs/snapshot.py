"""Build a Snapshot from a proc tree: tasks from the reader, namespaces from nsfs ioctls."""

from __future__ import annotations

import errno
import os

from pidns.ids import HostPid, NsId
from pidns.kernel import nsfs
from pidns.model import PidNamespace, Snapshot, Task, count_tasks
from pidns.procfs.reader import ProcReader


def snapshot(
    proc: str = "/proc", threads: bool = False, brief: bool = False, cmdlines: bool = True
) -> Snapshot:
    """Read every task and PID namespace visible through the proc tree at `proc`. `brief`:
    leave out what only a task's `status` tells when its namespace doesn't need it (see
    ProcReader): uids, gids and tracer_pid may be None; every other field is the same. With
    `cmdlines=False` only the namespaces' inits come with their argv (what `ls` shows)."""
    with ProcReader(proc, brief, cmdlines) as reader:
        tasks = reader.tasks(threads)
        by_pid = {task.host_pid: task for task in tasks}
        _infer_namespaces(by_pid)
        dev = nsfs.nsfs_dev()
        namespaces = _namespaces(reader, by_pid, dev)
        if not cmdlines:
            for ns in namespaces.values():
                if ns.init is not None:
                    by_pid[ns.init].cmdline = reader.cmdline(ns.init)
        problems: set[str] = set()
    root = next((ns.id for ns in namespaces.values() if ns.level == 0), None)
    snap = Snapshot(tasks=by_pid, namespaces=namespaces, root=root, proc=proc)
    count_tasks(snap, by_pid.values())
    unknown = sum(1 for t in tasks if t.ns_ino is None)
    if unknown:
        problems.add(
            f"the namespace of {unknown} tasks (ns/pid needs ptrace access, and no parent tells)"
        )
    if any(ns.parent_inferred for ns in namespaces.values()):
        problems.add("some namespace parents were inferred from tasks (nsfs files not readable)")
    snap.problems = sorted(problems)
    return snap


def _infer_namespaces(tasks: dict[HostPid, Task]) -> None:
    """Give tasks with an unreadable ns link the namespace the kernel's rules force on them.

    A task at level 0 lives in the tree's own namespace. A child lives in its parent's namespace
    or below it, so a child at its parent's level shares the parent's namespace.
    """
    root_ino = next((t.ns_ino for t in tasks.values() if t.level == 0 and t.ns_ino), None)

    def resolve(task: Task, depth: int = 0) -> int | None:
        if task.ns_ino is not None:
            return task.ns_ino
        if task.level == 0:
            return root_ino
        parent = tasks.get(task.ppid)
        if parent is None or parent.level != task.level or depth > 4096:
            return None
        return resolve(parent, depth + 1)

    for task in tasks.values():
        if task.ns_ino is None:
            task.ns_ino = resolve(task)
            if task.threads:
                for thread in task.threads:
                    thread.ns_ino = task.ns_ino


def _namespaces(
    reader: ProcReader, tasks: dict[HostPid, Task], dev: int
) -> dict[NsId, PidNamespace]:
    members: dict[int, list[Task]] = {}
    for task in tasks.values():
        if task.ns_ino is not None:
            members.setdefault(task.ns_ino, []).append(task)
    found: dict[NsId, PidNamespace] = {}
    for ino, group in members.items():
        level = group[0].level
        init = next((t for t in group if t.nspid[-1] == 1), None)
        ns = PidNamespace(
            id=NsId(dev, ino), level=level, parent=None, init=init.host_pid if init else None
        )
        found[ns.id] = ns
    for ino, group in members.items():
        ns = found[NsId(dev, ino)]
        if not _read_kernel_links(reader, group, ns, found):
            ns.parent = _inferred_parent(ns, tasks)
            ns.parent_inferred = ns.parent is not None
    return found


def _read_kernel_links(
    reader: ProcReader, group: list[Task], ns: PidNamespace, found: dict[NsId, PidNamespace]
) -> bool:
    """Fill owner and parent chain of ns from its nsfs file; False when no member's file opens."""
    for task in group:
        try:
            fd = nsfs.open_ns(f"{task.host_pid}/ns/pid", dir_fd=reader.fd)
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EPERM, errno.ENOENT, errno.ESRCH):
                continue
            raise
        try:
            if nsfs.identity(fd) != ns.id:  # the pid was reused meanwhile
                continue
            _read_owner(fd, ns)
            _walk_parents(fd, ns, found)
            return True
        finally:
            os.close(fd)
    return False


def _read_owner(fd: int, ns: PidNamespace) -> None:
    try:
        user_fd = nsfs.owner_userns(fd)
    except OSError:
        return  # the owner is outside the caller's user namespace tree
    try:
        ns.userns = os.fstat(user_fd).st_ino
        ns.owner_uid = nsfs.owner_uid(user_fd)
    finally:
        os.close(user_fd)


def _walk_parents(fd: int, ns: PidNamespace, found: dict[NsId, PidNamespace]) -> None:
    """Follow NS_GET_PARENT up to level 0, adding ancestors that hold no task of their own."""
    child = ns
    current = fd
    try:
        while child.level > 0:
            try:
                parent_fd = nsfs.parent(current)
            except OSError:
                return  # above the caller's namespace: nothing further to see
            if current != fd:
                os.close(current)
            current = parent_fd
            parent_id = nsfs.identity(current)
            child.parent = parent_id
            known = found.get(parent_id)
            if known is not None:
                return
            known = PidNamespace(id=parent_id, level=child.level - 1, parent=None)
            _read_owner(current, known)
            found[parent_id] = known
            child = known
    finally:
        if current != fd:
            try:  # noqa: SIM105 - contextlib costs every snapshot's command an import
                os.close(current)
            except OSError:
                pass


def _inferred_parent(ns: PidNamespace, tasks: dict[HostPid, Task]) -> NsId | None:
    """Without nsfs access, the parent is the namespace of the task that forked ns's init."""
    if ns.init is None or ns.level == 0:
        return None
    forker = tasks.get(tasks[ns.init].ppid)
    if forker is None or forker.level != ns.level - 1 or forker.ns_ino is None:
        return None
    return NsId(ns.id.dev, forker.ns_ino)
