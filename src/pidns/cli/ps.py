"""`pidns ps`: the tasks a namespace sees, numbered as it sees them."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _string
from typing import TYPE_CHECKING, Any

import click

from pidns.cli.options import (
    json_option,
    namespace_for,
    no_containers_option,
    proc_option,
    runtime_cli_option,
)
from pidns.cli.output import console, print_columns, user_name, warn
from pidns.listing import command_line
from pidns.model import PidNamespace, Snapshot, TaskView

if TYPE_CHECKING:
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
    done: dict[int, str] = {}  # each container's JSON, once

    def container_json(view: TaskView) -> str:
        ino = view.task.ns_ino
        found = containers.get(ino) if ino is not None else None
        if found is None:
            return "null"
        key = id(found)
        if key not in done:
            done[key] = json.dumps(found.to_json(), separators=(",", ":"))
        return done[key]

    rows = []
    for v in views:
        task = v.task
        ns = task.ns_ino
        rows.append(
            f'{{"pid":{v.pid},"tgid":{v.tgid},"ppid":{v.ppid},"pgid":{v.pgrp},"sid":{v.sid},'
            f'"host_pid":{task.host_pid},"nspid":[{_ints(v.nspid)}],'
            f'"nstgid":[{_ints(v.nstgid)}],"nspgid":[{_ints(v.nspgid)}],'
            f'"nssid":[{_ints(v.nssid)}],"ns":{"null" if ns is None else ns},'
            f'"level":{len(task.nspid) - 1},"uid":{task.euid},"state":{text(task.state)},'
            f'"comm":{text(task.comm)},"cmdline":[{",".join(map(text, task.cmdline))}],'
            f'"start_time":{task.start_time},'
            f'"thread":{"false" if task.host_pid == task.tgid else "true"},'
            f'"container":{container_json(v)}}}'
        )
    return f"[{','.join(rows)}]"


def _ints(values: tuple[int, ...]) -> str:
    return ",".join(map(str, values))


def parse_columns(spec: str) -> list[str]:
    names = [c.strip().lower() for c in spec.split(",") if c.strip()]
    unknown = [c for c in names if c not in COLUMNS and c not in CONTAINER_COLUMNS]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown column {', '.join(unknown) or '(none)'}; choose from {', '.join([*COLUMNS, *CONTAINER_COLUMNS])}",
            param_hint="-o",
        )
    return names


@click.command("ps")
@click.option(
    "--ns", "designator", metavar="NS", help="The namespace to view from (default: yours)."
)
@click.option("--tree", is_flag=True, help="Draw parent/child, marking namespace boundaries.")
@click.option("-T", "--threads", is_flag=True, help="Show every thread, not only group leaders.")
@click.option(
    "-o",
    "columns",
    default=DEFAULT_COLUMNS,
    show_default=True,
    help=f"Columns to show, of: {', '.join([*COLUMNS, *CONTAINER_COLUMNS])}.",
)
@click.option(
    "--container",
    "container_filter",
    metavar="NAME",
    help="Only tasks of this container (its name, an id prefix, RUNTIME:NAME or its pod's name).",
)
@no_containers_option
@runtime_cli_option
@json_option
@proc_option
def command(
    designator: str | None,
    tree: bool,
    threads: bool,
    columns: str,
    container_filter: str | None,
    no_containers: bool,
    as_json: bool,
    proc: str,
) -> None:
    """List the tasks visible in NS, numbered as NS sees them.

    PID/PPID are NS's numbers (PPID 0: the parent is outside NS); NSPID is the pid chain from NS
    down to the task's own namespace; HOSTPID is the number in the proc tree's own namespace.
    CONTAINER, POD and RUNTIME (-o) name the container of the task's PID namespace.
    """
    from pidns.procfs.snapshot import snapshot

    cols = parse_columns(columns)
    if no_containers and (container_filter or any(c in CONTAINER_COLUMNS for c in cols)):
        raise click.UsageError("--no-containers leaves no container to show or filter by")
    snap = snapshot(proc, threads=threads, brief=True)  # no column shows what brief omits
    ns = namespace_for(snap, designator)
    views = snap.views(ns, threads=threads)
    problems = list(snap.problems)
    containers: dict[int, Container] = {}
    wanted = as_json or container_filter or any(c in CONTAINER_COLUMNS for c in cols)
    if wanted and not no_containers:
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
