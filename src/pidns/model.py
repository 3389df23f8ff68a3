"""The /proc model: tasks, PID namespaces, and the kernel's visibility and translation rules.

Everything here is pure: a Snapshot is data read earlier, and every rule is a function of it.
Levels count from the namespace that owns the proc tree the snapshot was read from (level 0).
"""

from __future__ import annotations

from operator import attrgetter

from pidns.ids import HostPid, NsId, NsPid, TaskId
from pidns.plain import Plain

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Final


class Task(Plain):
    """One task as the proc tree's owner sees it. Chains run from level 0 down to the task's level."""

    __slots__ = (
        "cmdline",
        "comm",
        "egid",
        "euid",
        "gids",
        "host_pid",
        "ns_ino",
        "nspgid",
        "nspid",
        "nssid",
        "nstgid",
        "num_threads",
        "ppid",
        "start_time",
        "state",
        "tgid",
        "threads",
        "tpgid",
        "tracer_pid",
        "tty_nr",
        "uids",
    )

    def __init__(
        self,
        host_pid: HostPid,
        tgid: HostPid,
        ppid: HostPid,
        tracer_pid: HostPid | None,
        nstgid: tuple[int, ...],
        nspid: tuple[int, ...],
        nspgid: tuple[int, ...],
        nssid: tuple[int, ...],
        uids: tuple[int, int, int, int] | None,
        gids: tuple[int, int, int, int] | None,
        euid: int,
        egid: int,
        state: str,
        comm: str,
        cmdline: list[str],
        start_time: int,
        tty_nr: int,
        tpgid: int,
        num_threads: int,
        ns_ino: int | None,
        threads: list[Task] | None = None,
    ) -> None:
        self.host_pid = host_pid
        self.tgid = tgid
        self.ppid = ppid  # tgid of the real parent; 0 when it has no number at level 0
        # None, and uids/gids None: not read (a brief snapshot reads `status` only where needed)
        self.tracer_pid = tracer_pid
        self.nstgid = nstgid
        self.nspid = nspid
        self.nspgid = nspgid
        self.nssid = nssid
        self.uids = uids  # real, effective, saved, filesystem
        self.gids = gids
        self.euid = euid  # always read: status, or the owner of the task's /proc directory
        self.egid = egid
        self.state = state
        self.comm = comm
        self.cmdline = cmdline
        self.start_time = start_time
        self.tty_nr = tty_nr
        self.tpgid = tpgid
        self.num_threads = num_threads
        self.ns_ino = ns_ino  # None: the ns link was unreadable and nothing allowed an inference
        self.threads = threads  # other threads of the group, when read

    @property
    def identity(self) -> TaskId:
        return TaskId(self.host_pid, self.start_time)

    @property
    def level(self) -> int:
        return len(self.nspid) - 1

    @property
    def uid(self) -> int:
        """The effective uid, as ps shows it."""
        return self.euid

    @property
    def is_thread_leader(self) -> bool:
        return self.host_pid == self.tgid


class PidNamespace(Plain):
    __slots__ = (
        "id",
        "init",
        "level",
        "name",
        "owner_uid",
        "parent",
        "parent_inferred",
        "tasks",
        "tasks_total",
        "userns",
    )

    def __init__(
        self,
        id: NsId,
        level: int,
        parent: NsId | None,
        parent_inferred: bool = False,
        init: HostPid | None = None,
        owner_uid: int | None = None,
        userns: int | None = None,
        tasks: int = 0,
        tasks_total: int = 0,
        name: str | None = None,
    ) -> None:
        self.id = id
        self.level = level
        self.parent = parent
        self.parent_inferred = parent_inferred  # True when read from tasks, not from NS_GET_PARENT
        self.init = init  # the task numbered 1 in it, if alive and visible
        self.owner_uid = owner_uid
        self.userns = userns  # inode of the owning user namespace
        self.tasks = tasks  # thread-group leaders living in it
        self.tasks_total = tasks_total  # ... in it and every namespace below it
        self.name = name

    @property
    def ino(self) -> int:
        return self.id.ino


class TaskView(Plain):
    """A task translated into the numbers of one namespace (the `ns` it is viewed from).
    Never changed once made (Final, for the type checker)."""

    __slots__ = (
        "ns",
        "nspgid",
        "nspid",
        "nssid",
        "nstgid",
        "pgrp",
        "pid",
        "ppid",
        "sid",
        "task",
        "tgid",
        "tracer_pid",
    )

    def __init__(
        self,
        task: Task,
        ns: NsId,
        pid: NsPid,
        tgid: NsPid,
        ppid: NsPid,
        tracer_pid: NsPid | None,
        pgrp: NsPid,
        sid: NsPid,
        nstgid: tuple[int, ...],
        nspid: tuple[int, ...],
        nspgid: tuple[int, ...],
        nssid: tuple[int, ...],
    ) -> None:
        self.task: Final = task
        self.ns: Final = ns
        self.pid: Final = pid
        self.tgid: Final = tgid
        self.ppid: Final = ppid  # 0 when the parent has no number in the viewing namespace
        self.tracer_pid: Final = tracer_pid  # None: not read
        self.pgrp: Final = pgrp  # 0 when the group leader is invisible
        self.sid: Final = sid
        self.nstgid: Final = nstgid
        self.nspid: Final = nspid
        self.nspgid: Final = nspgid
        self.nssid: Final = nssid


class Snapshot(Plain):
    """Tasks and namespaces read from one proc tree at (about) one moment."""

    __slots__ = ("_ino_index", "namespaces", "problems", "proc", "root", "tasks")

    def __init__(
        self,
        tasks: dict[HostPid, Task],
        namespaces: dict[NsId, PidNamespace],
        root: NsId | None,
        proc: str = "/proc",
        problems: list[str] | None = None,
    ) -> None:
        self.tasks = tasks  # thread-group leaders by host pid
        self.namespaces = namespaces
        self.root = root  # the namespace that owns the proc tree (level 0)
        self.proc = proc
        self.problems = [] if problems is None else problems  # what could not be read, for the user
        self._ino_index: dict[int, PidNamespace] = {}

    # -- lookups ---------------------------------------------------------------------------

    def by_ino(self, ino: int) -> PidNamespace | None:
        if len(self._ino_index) != len(self.namespaces):
            self._ino_index = {ns.id.ino: ns for ns in self.namespaces.values()}
        return self._ino_index.get(ino)

    def ns_of(self, task: Task) -> PidNamespace | None:
        if task.ns_ino is None:
            return None
        return self.by_ino(task.ns_ino)

    def ancestor_at(self, ns: PidNamespace, level: int) -> PidNamespace | None:
        """The namespace at `level` on the path from the root down to `ns` (ns itself at its level)."""
        current: PidNamespace | None = ns
        while current is not None and current.level > level:
            current = self.namespaces.get(current.parent) if current.parent else None
        return current if current is not None and current.level == level else None

    def children(self, ns: PidNamespace) -> list[PidNamespace]:
        return sorted(
            (n for n in self.namespaces.values() if n.parent == ns.id), key=lambda n: n.id.ino
        )

    def all_tasks(self, threads: bool = False) -> Iterator[Task]:
        for task in self.tasks.values():
            yield task
            if threads and task.threads:
                yield from task.threads

    # -- the kernel's rules ------------------------------------------------------------------

    def subtree(self, ns: PidNamespace) -> frozenset[int | None]:
        """Inodes of ns and every namespace below it (None too, for the root: tasks whose
        namespace is unknown are only known to live somewhere under the root)."""
        found: set[int | None] = {ns.id.ino}
        for other in self.namespaces.values():
            if other.level > ns.level and self.ancestor_at(other, ns.level) is ns:
                found.add(other.id.ino)
        if ns.id == self.root:
            found.add(None)
        return frozenset(found)

    def visible(self, task: Task, ns: PidNamespace) -> bool:
        """A task is visible in ns when it has a number at ns's level and lives in ns or below."""
        if len(task.nspid) <= ns.level:
            return False
        home = self.ns_of(task)
        if home is None:
            return ns.level == 0 and ns.id == self.root
        return self.ancestor_at(home, ns.level) is ns

    def pid_in(self, task: Task, ns: PidNamespace) -> NsPid | None:
        return NsPid(task.nspid[ns.level]) if self.visible(task, ns) else None

    def view(
        self, task: Task, ns: PidNamespace, members: frozenset[int | None] | None = None
    ) -> TaskView | None:
        """The task as ns numbers it, or None when ns cannot see it. `members` is
        `subtree(ns)`, passed in when viewing many tasks from the same namespace."""
        if members is None:
            members = self.subtree(ns)
        lvl = ns.level
        if task.ns_ino not in members or len(task.nspid) <= lvl:
            return None
        parent = self.tasks.get(task.ppid)
        ppid = parent.nstgid[lvl] if parent is not None and parent.ns_ino in members else 0
        tracer_pid: int | None = None
        if task.tracer_pid is not None:
            tracer = self.tasks.get(task.tracer_pid) if task.tracer_pid else None
            tracer_pid = (
                tracer.nstgid[lvl] if tracer is not None and tracer.ns_ino in members else 0
            )
        nspgid = task.nspgid[lvl:]
        nssid = task.nssid[lvl:]
        return TaskView(
            task,
            ns.id,
            NsPid(task.nspid[lvl]),
            NsPid(task.nstgid[lvl]),
            NsPid(ppid),
            None if tracer_pid is None else NsPid(tracer_pid),
            NsPid(nspgid[0] if nspgid else 0),
            NsPid(nssid[0] if nssid else 0),
            task.nstgid[lvl:],
            task.nspid[lvl:],
            nspgid,
            nssid,
        )

    def views(self, ns: PidNamespace, threads: bool = False) -> list[TaskView]:
        """Every task ns can see, numbered as ns sees them, ordered by that number."""
        members = self.subtree(ns)
        found = [v for t in self.all_tasks(threads) if (v := self.view(t, ns, members)) is not None]
        found.sort(key=_by_pid)
        return found

    def find(self, pid: int, ns: PidNamespace) -> Task | None:
        """The task (leader or thread) that ns numbers `pid`."""
        for task in self.all_tasks(threads=True):
            if (
                len(task.nspid) > ns.level
                and task.nspid[ns.level] == pid
                and self.visible(task, ns)
            ):
                return task
        return None

    def translate(self, pid: int, src: PidNamespace, dst: PidNamespace) -> NsPid | None:
        """The number dst gives the task src numbers `pid`; None when either cannot see it."""
        task = self.find(pid, src)
        return None if task is None else self.pid_in(task, dst)


_by_pid = attrgetter("pid")


def count_tasks(snapshot: Snapshot, tasks: Iterable[Task]) -> None:
    """Fill each namespace's own and subtree task counts."""
    for ns in snapshot.namespaces.values():
        ns.tasks = ns.tasks_total = 0
    for task in tasks:
        home = snapshot.ns_of(task)
        if home is None:
            continue
        home.tasks += 1
        current: PidNamespace | None = home
        while current is not None:
            current.tasks_total += 1
            current = snapshot.namespaces.get(current.parent) if current.parent else None
