"""The one table of the files a view renders rather than passes through: name -> renderer.

Adding a served file happens here and nowhere else: a per-task file whose bytes name pids goes in
TASK_FILES; a top-level file whose content follows the namespace or the reader (docs/kernel-proc.md
§14, §16) in TOP_FILES; one shown only with --virtualize in VIRTUALIZED as well; one a cgroup's
limits change (meminfo, cpuinfo, stat, …) in RESOURCE_FILES, which --virtualize and every file of
`pidns lxcfs` render for a Subject (a cgroup and a namespace). Everything else is the host's,
passed through. Renderers are the pure functions of files/; these adapters only fetch
their inputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from pidns.fuse.node import Requester
from pidns.kernel.pidfd import exists
from pidns.view import rules
from pidns.view.files.children import render_children
from pidns.view.files.cpuinfo import render_cpuinfo, render_online
from pidns.view.files.diskstats import render_diskstats
from pidns.view.files.ids import task_ids
from pidns.view.files.loadavg import render_loadavg, render_virtual_loadavg
from pidns.view.files.locks import render_locks
from pidns.view.files.meminfo import render_meminfo, render_swaps
from pidns.view.files.procstat import render_proc_stat, shift_btime
from pidns.view.files.sched import render_sched
from pidns.view.files.stat import shift_start_time, stat_running, translate_stat
from pidns.view.files.status import status_running, translate_status
from pidns.view.files.uptime import render_uptime, shift_uptime
from pidns.view.files.userids import render_user_ids
from pidns.view.instances import View
from pidns.view.resources import Subject
from pidns.view.rules import Creds

# What the kernel answers in a new pid namespace for sys/kernel/pid_max (PID_MAX_LIMIT, 64-bit).
NEW_NS_PID_MAX = 4 * 1024 * 1024


class Task(Protocol):
    """A task's directory as a renderer needs it."""

    @property
    def view(self) -> View: ...
    @property
    def ns_pid(self) -> int: ...
    @property
    def host_pid(self) -> int: ...

    def read(self, name: str) -> bytes: ...
    def creds(self) -> Creds: ...


TaskRenderer = Callable[[Task, Requester], bytes]
# (view, the host's bytes of the file, requester)
TopRenderer = Callable[[View, bytes, Requester], bytes]
# (whose resources, the host's bytes of the file)
ResourceRenderer = Callable[[Subject, bytes], bytes]


def _status(task: Task, req: Requester) -> bytes:
    nsmap = task.view.instance.nsmap
    status = translate_status(task.read("status"), nsmap.level, nsmap.to_ns)
    if req.tid == task.host_pid:  # FUSE numbers requesters as the daemon's namespace does
        status = status_running(status)
    ids = task.view.reader_ids(req)
    return status if ids is None else render_user_ids(status, ids)


def _stat(task: Task, req: Requester) -> bytes:
    nsmap = task.view.instance.nsmap
    permitted = req.uid == 0 or rules.may_ptrace_read(req, task.creds())
    stat = translate_stat(
        task.read("stat"),
        task.ns_pid,
        nsmap.to_ns,
        lambda: task_ids(task.read("status"), nsmap.level, nsmap.to_ns),
        exists,
        permitted,
    )
    # the start time in the reader's CLOCK_BOOTTIME (§14b): a reader in a time namespace
    # (`pidns run --virtualize`, and `pidns exec` into it) counts from that namespace's zero
    stat = shift_start_time(stat, task.view.reader_boottime_ns(req), _CLK_TCK)
    return stat_running(stat) if req.tid == task.host_pid else stat


def _children(task: Task, req: Requester) -> bytes:
    return render_children(task.read("children"), task.view.instance.nsmap.to_ns)


def _sched(task: Task, req: Requester) -> bytes:
    return render_sched(task.read("sched"), task.ns_pid)


# Per-task files; `children` exists only under task/T (the kernel has no /N/children).
TASK_FILES: dict[str, TaskRenderer] = {
    "status": _status,
    "stat": _stat,
    "children": _children,
    "sched": _sched,
}
THREAD_ONLY = frozenset({"children"})


def _locks(view: View, host: bytes, req: Requester) -> bytes:
    return render_locks(host, view.instance.nsmap.to_ns)


def _loadavg(view: View, host: bytes, req: Requester) -> bytes:
    reader = view.reader_map(req)
    last = reader.last_pid() if reader is not None else int(host.split()[-1])
    if view.options.virtualize:
        running, total = view.instance.counts()
        return render_virtual_loadavg(host, running, total, last)
    return render_loadavg(host, last)


def _uptime(view: View, host: bytes, req: Requester) -> bytes:
    """--virtualize: the namespace's age (LXCFS's rule), or, for a reader in a time namespace,
    that namespace's CLOCK_BOOTTIME, which the reader's start times and sysinfo(2) count in:
    then ps's elapsed times (uptime less start time) stay right."""
    subject = view.instance.subject(view.options)
    offset = view.reader_boottime_ns(req)
    if subject is None:
        return shift_uptime(host, offset) if offset else view.instance.uptime(host)
    age = float(shift_uptime(host, offset).split()[0]) if offset else None
    return _resource_uptime(subject, host, age)


def _ns_last_pid(view: View, host: bytes, req: Requester) -> bytes:
    reader = view.reader_map(req)  # None: the reader is in the daemon's namespace, the host's
    return host if reader is None else b"%d\n" % reader.last_pid()


def _pid_max(view: View, host: bytes, req: Requester) -> bytes:
    return host if view.reader_map(req) is None else b"%d\n" % NEW_NS_PID_MAX


# -- resource files (--virtualize, and every file of `pidns lxcfs`) -----------------------------


def _meminfo(subject: Subject, host: bytes) -> bytes:
    return render_meminfo(host, subject.memory())


def _swaps(subject: Subject, host: bytes) -> bytes:
    return render_swaps(host, subject.host("meminfo"), subject.memory())


def _cpuinfo(subject: Subject, host: bytes) -> bytes:
    return render_cpuinfo(host, subject.cpus())


def _online(subject: Subject, host: bytes) -> bytes:
    return render_online(host, subject.cpus(), subject.cpus_from_quota)


def _proc_stat(subject: Subject, host: bytes) -> bytes:
    return render_proc_stat(
        host,
        subject.cpus(),
        subject.cpu_time(),
        os.sysconf("SC_CLK_TCK"),
        subject.tasks(),
        renumber=subject.cpus_from_quota,
    )


def _diskstats(subject: Subject, host: bytes) -> bytes:
    return render_diskstats(host, subject.disk_io())


def _resource_uptime(subject: Subject, host: bytes, age: float | None = None) -> bytes:
    if age is None:
        age = subject.age()
    if age is None:
        return host
    time = subject.cpu_time()
    cpus = subject.cpus()
    busy = None if time is None else (time.user_ns + time.system_ns) / 1e9
    return render_uptime(host, age, busy, len(cpus) if cpus else os.cpu_count() or 1)


def _pressure(resource: str) -> ResourceRenderer:
    def render(subject: Subject, host: bytes) -> bytes:
        own = subject.pressure(resource)
        return host if own is None else own

    return render


# The files a cgroup's limits change, by their path under /proc (sys/… under the sysfs root of
# `pidns lxcfs`). Each reads only the subject's cgroup.
RESOURCE_FILES: dict[str, ResourceRenderer] = {
    "meminfo": _meminfo,
    "swaps": _swaps,
    "cpuinfo": _cpuinfo,
    "stat": _proc_stat,
    "diskstats": _diskstats,
    "uptime": _resource_uptime,
    "pressure/cpu": _pressure("cpu"),
    "pressure/memory": _pressure("memory"),
    "pressure/io": _pressure("io"),
}
SYS_FILES: dict[str, ResourceRenderer] = {"devices/system/cpu/online": _online}


def _virtualized(name: str) -> TopRenderer:
    render = RESOURCE_FILES[name]

    def top(view: View, host: bytes, req: Requester) -> bytes:
        subject = view.instance.subject(view.options)
        return host if subject is None else render(subject, host)

    if name != "stat":
        return top

    def stat(view: View, host: bytes, req: Requester) -> bytes:
        return _reader_stat(view, top(view, host, req), req)

    return stat


def _reader_stat(view: View, stat: bytes, req: Requester) -> bytes:
    # btime as the reader's time namespace has it (§14b; a `pidns run --virtualize` is born in
    # one): the per-task start times it reads are counted in that clock
    return shift_btime(stat, view.reader_boottime_ns(req) // 1_000_000_000)


def _reader_uptime(view: View, host: bytes, req: Requester) -> bytes:
    return shift_uptime(host, view.reader_boottime_ns(req))


_CLK_TCK = os.sysconf("SC_CLK_TCK")


TOP_FILES: dict[str, TopRenderer] = {
    "locks": _locks,
    "loadavg": _loadavg,
    "sys/kernel/ns_last_pid": _ns_last_pid,
    "sys/kernel/pid_max": _pid_max,
    "uptime": _uptime,
    **{name: _virtualized(name) for name in RESOURCE_FILES if name != "uptime"},
}
# rendered only with --virtualize (loadavg's counts too)
VIRTUALIZED = frozenset(RESOURCE_FILES)
# Without --virtualize, the files of those whose clock is the reader's (§14b): the host's,
# moved by the reader's time namespace offset
READER_CLOCK: dict[str, TopRenderer] = {"stat": _reader_stat, "uptime": _reader_uptime}


def overlaid_files() -> tuple[str, ...]:
    """The files --virtualize renders, by their path under /proc: what the hybrid (a kernel's
    procfs with these bound over it from a view) takes from the view."""
    return ("loadavg", *RESOURCE_FILES)


def top_renderer(rel: str, virtualize: bool) -> TopRenderer | None:
    """The renderer of the top-level file rel, None when the view passes it through."""
    if rel in VIRTUALIZED and not virtualize:
        return READER_CLOCK.get(rel)
    return TOP_FILES.get(rel)
