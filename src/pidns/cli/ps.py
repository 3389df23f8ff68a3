"""`pidns ps`: the tasks a namespace sees, numbered as it sees them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pidns.cli.options import json_option, namespace_for, proc_option
from pidns.cli.output import console, emit_json, print_columns, user_name, warn
from pidns.listing import command_line
from pidns.model import PidNamespace, Snapshot, TaskView

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
DEFAULT_COLUMNS = "pid,ppid,hostpid,nspid,user,stat,command"


def record(view: TaskView) -> dict[str, Any]:
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
    }


def parse_columns(spec: str) -> list[str]:
    names = [c.strip().lower() for c in spec.split(",") if c.strip()]
    unknown = [c for c in names if c not in COLUMNS]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown column {', '.join(unknown) or '(none)'}; choose from {', '.join(COLUMNS)}",
            param_hint="-o",
        )
    return names


@click.command("ps")
@click.option(
    "--ns", "designator", metavar="NS", help="The namespace to view from (default: yours)."
)
@click.option("--tree", is_flag=True, help="Draw parent/child, marking namespace boundaries.")
@click.option("-T", "--threads", is_flag=True, help="Show every thread, not only group leaders.")
@click.option("-o", "columns", default=DEFAULT_COLUMNS, show_default=True, help="Columns to show.")
@json_option
@proc_option
def command(
    designator: str | None, tree: bool, threads: bool, columns: str, as_json: bool, proc: str
) -> None:
    """List the tasks visible in NS, numbered as NS sees them.

    PID/PPID are NS's numbers (PPID 0: the parent is outside NS); NSPID is the pid chain from NS
    down to the task's own namespace; HOSTPID is the number in the proc tree's own namespace.
    """
    from pidns.procfs.snapshot import snapshot

    cols = parse_columns(columns)
    snap = snapshot(proc, threads=threads)
    ns = namespace_for(snap, designator)
    views = snap.views(ns, threads=threads)
    if as_json:
        emit_json([record(v) for v in views])
        return
    for problem in snap.problems:
        warn(f"could not read: {problem}")
    if tree:
        print_tree(snap, ns, views)
    else:
        print_table(views, cols)


def print_table(views: list[TaskView], cols: list[str]) -> None:
    rows = [[COLUMNS[c][1](v) for c in cols] for v in views]
    print_columns([COLUMNS[c][0] for c in cols], rows, left={"USER", "COMMAND", "COMM"})


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
