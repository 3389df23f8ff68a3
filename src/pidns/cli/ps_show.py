"""What `pidns ps` shows, without click: the click command (ps.py) and the fast path of
main.py (`ps --json`, which is measured against procps and psutil) both end here."""

from __future__ import annotations

import os
import sys

# json's C encoder of strings, which json.dumps uses: the json package would import its
# decoder too, which compiles regular expressions at import.
from _json import encode_basestring_ascii as _string

from pidns.cli.output import console, print_columns, user_name, warn
from pidns.errors import PidnsError
from pidns.listing import command_line
from pidns.model import PidNamespace, Snapshot, TaskView

TYPE_CHECKING = False  # typing (with re, contextlib, ...) is for the type checker only
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from pidns.containers import Container

COLUMNS: dict[str, tuple[str, Callable[[TaskView], str]]] = {
    "pid": ("PID", lambda v: str(v.pid)),
    "ppid": ("PPID", lambda v: str(v.ppid)),
    "tgid": ("TGID", lambda v: str(v.tgid)),
    "pgid": ("PGID", lambda v: str(v.pgrp)),
    "sid": ("SID", lambda v: str(v.sid)),
    "hostpid": ("HOSTPID", lambda v: str(v.task.host_pid)),
    "nspid": ("NSPID", lambda v: ",".join(map(str, v.nspid))),
    "ns": ("NS", lambda v: str(v.task.ns_ino or "?")),
    "uid": ("UID", lambda v: str(v.task.uid)),
    "user": ("USER", lambda v: user_name(v.task.uid)),
    "stat": ("STAT", lambda v: v.task.state),
    "comm": ("COMM", lambda v: v.task.comm),
    "command": ("COMMAND", lambda v: command_line(v.task.cmdline, v.task.comm)),
}
# Columns about the task's container (labelled per namespace, read only when asked for).
CONTAINER_COLUMNS: dict[str, tuple[str, Callable[[Container | None], str]]] = {
    "container": ("CONTAINER", lambda c: "-" if c is None else (c.name or c.short_id)),
    "pod": ("POD", lambda c: "-" if c is None or c.pod is None else f"{c.pod_namespace}/{c.pod}"),
    "runtime": ("RUNTIME", lambda c: "-" if c is None else c.runtime),
}
DEFAULT_COLUMNS = "pid,ppid,hostpid,nspid,user,stat,command"


def record(view: TaskView, container: Container | None = None) -> dict[str, Any]:
    task = view.task
    return {
        "pid": view.pid,
        "tgid": view.tgid,
        "ppid": view.ppid,
        "pgid": view.pgrp,
        "sid": view.sid,
        "host_pid": task.host_pid,
        "nspid": list(view.nspid),
        "nstgid": list(view.nstgid),
        "nspgid": list(view.nspgid),
        "nssid": list(view.nssid),
        "ns": task.ns_ino,
        "level": task.level,
        "uid": task.uid,
        "state": task.state,
        "comm": task.comm,
        "cmdline": task.cmdline,
        "start_time": task.start_time,
        "thread": not task.is_thread_leader,
        "container": container.to_json() if container is not None else None,
    }


def records_json(views: list[TaskView], containers: dict[int, Container]) -> str:
    """json.dumps([record(v, container) ...], separators=(",", ":")), written directly: at
    10,000 tasks the dicts and the encoder's walk over them cost more than reading the tasks."""
    text = _string
    ints = _ints
    done: dict[int | None, str] = {None: "null"}  # each namespace's container, as JSON
    rows: list[str] = []
    append = rows.append
    for v in views:
        task = v.task
        ns = task.ns_ino
        container = done.get(ns)
        if container is None:
            found = containers.get(ns) if ns is not None else None
            container = done[ns] = "null" if found is None else _container_json(found)
        append(
            f'{{"pid":{v.pid},"tgid":{v.tgid},"ppid":{v.ppid},"pgid":{v.pgrp},"sid":{v.sid},'
            f'"host_pid":{task.host_pid},"nspid":[{ints(v.nspid)}],'
            f'"nstgid":[{ints(v.nstgid)}],"nspgid":[{ints(v.nspgid)}],'
            f'"nssid":[{ints(v.nssid)}],"ns":{"null" if ns is None else ns},'
            f'"level":{len(task.nspid) - 1},"uid":{task.euid},"state":{text(task.state)},'
            f'"comm":{text(task.comm)},"cmdline":[{",".join(map(text, task.cmdline))}],'
            f'"start_time":{task.start_time},'
            f'"thread":{"false" if task.host_pid == task.tgid else "true"},'
            f'"container":{container}}}'
        )
    return f"[{','.join(rows)}]"


def _container_json(container: Container) -> str:
    import json

    return json.dumps(container.to_json(), separators=(",", ":"))


def _ints(values: tuple[int, ...]) -> str:
    return str(values[0]) if len(values) == 1 else ",".join(map(str, values))


def show(
    designator: str | None,
    tree: bool,
    threads: bool,
    cols: list[str],
    container_filter: str | None,
    no_containers: bool,
    as_json: bool,
    proc: str,
) -> None:
    """What `pidns ps` prints, its options read (by click, or by parse_fast)."""
    from pidns.procfs.snapshot import snapshot

    snap = snapshot(proc, threads=threads, brief=True)  # no column shows what brief omits
    ns = namespace_for(snap, designator)
    views = snap.views(ns, threads=threads)
    problems = list(snap.problems)
    containers: dict[int, Container] = {}
    wanted = as_json or container_filter or any(c in CONTAINER_COLUMNS for c in cols)
    # Only a namespace below the root can be a container's (label skips the root): the
    # runtimes' modules are not imported for a snapshot that has no other.
    below_root = any(ns_id != snap.root for ns_id in snap.namespaces)
    if wanted and not no_containers and below_root:
        from pidns.containers import label

        labels = label(snap)
        containers = labels.by_ns
        problems += labels.problems
    if container_filter is not None:
        views = [
            v
            for v in views
            if (c := _of(containers, v)) is not None and c.matches(container_filter)
        ]
    for problem in problems:
        warn(f"could not read: {problem}")
    if as_json:
        sys.stdout.write(records_json(views, containers) + "\n")
        return
    if tree:
        print_tree(snap, ns, views)
    else:
        print_table(views, cols, containers)


def parse_fast(args: list[str]) -> dict[str, Any] | None:
    """`ps --json` and its plain companions (--ns, --proc, -T, --no-containers), read without
    click (whose import is a tenth of `ps --json` at 10,000 tasks); None: let click read them."""
    out: dict[str, Any] = {"designator": None, "threads": False, "no_containers": False}
    out["proc"] = "/proc"
    as_json = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--json":
            as_json = True
        elif arg in ("-T", "--threads"):
            out["threads"] = True
        elif arg == "--no-containers":
            out["no_containers"] = True
        elif arg in ("--ns", "--proc") and i + 1 < len(args) and not args[i + 1].startswith("-"):
            out["designator" if arg == "--ns" else "proc"] = args[i + 1]
            i += 1
        else:
            return None
        i += 1
    if not as_json:
        return None
    return out


def own_namespace(snap: Snapshot) -> PidNamespace:
    """The caller's own PID namespace, or the tree's root when the caller is not in it."""
    try:
        ns = snap.by_ino(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        ns = None
    if ns is None and snap.root is not None:
        ns = snap.namespaces[snap.root]
    if ns is None:
        raise PidnsError(f"no namespace is visible through {snap.proc}")
    return ns


def namespace_for(snap: Snapshot, designator: str | None) -> PidNamespace:
    if designator is None:
        return own_namespace(snap)
    from pidns.designators import resolve

    return resolve(designator, snap)


def _of(containers: dict[int, Container], view: TaskView) -> Container | None:
    ino = view.task.ns_ino
    return containers.get(ino) if ino is not None else None


def print_table(
    views: list[TaskView], cols: list[str], containers: dict[int, Container] | None = None
) -> None:
    containers = containers or {}

    def cell(c: str, v: TaskView) -> str:
        if c in CONTAINER_COLUMNS:
            return CONTAINER_COLUMNS[c][1](_of(containers, v))
        return COLUMNS[c][1](v)

    rows = [[cell(c, v) for c in cols] for v in views]
    headers = [(COLUMNS.get(c) or CONTAINER_COLUMNS[c])[0] for c in cols]
    print_columns(headers, rows, left={"USER", "COMMAND", "COMM", "CONTAINER", "POD", "RUNTIME"})


def print_tree(snap: Snapshot, ns: PidNamespace, views: list[TaskView]) -> None:
    from rich.markup import escape
    from rich.tree import Tree

    leaders = [v for v in views if v.task.is_thread_leader]
    by_pid = {v.pid: v for v in leaders}
    children: dict[int, list[TaskView]] = {}
    roots: list[TaskView] = []
    for v in leaders:
        if v.ppid and v.ppid in by_pid and v.ppid != v.pid:
            children.setdefault(v.ppid, []).append(v)
        else:
            roots.append(v)

    def label(v: TaskView, parent: TaskView | None) -> str:
        command = command_line(v.task.cmdline, v.task.comm)
        command = command if len(command) <= 60 else command[:59] + "…"
        host = f" [dim](host {v.task.host_pid})[/]" if int(v.task.host_pid) != int(v.pid) else ""
        text = f"[bold]{v.pid}[/]{host} {escape(command)}"
        if parent is None or parent.task.ns_ino != v.task.ns_ino:
            home = snap.ns_of(v.task)
            where = f"pid:[{home.id.ino}] level {home.level}" if home else "namespace unknown"
            text = f"[magenta]⟦{where}⟧[/] " + text
        return text

    def grow(node: Tree, v: TaskView) -> None:
        for child in children.get(v.pid, []):
            grow(node.add(label(child, v)), child)

    out = console()
    top = Tree(f"[cyan]pid:[{ns.id.ino}][/] level {ns.level} ({len(leaders)} processes)")
    for root in roots:
        grow(top.add(label(root, None)), root)
    out.print(top)
