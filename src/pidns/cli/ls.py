"""`pidns ls`: the namespace tree."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape

from pidns.cli.options import json_option, proc_option
from pidns.cli.output import console, emit_json, print_columns, user_name, warn
from pidns.listing import name_namespaces, ordered, record


def label(rec: dict[str, Any]) -> str:
    name = f" [bold]{escape(rec['name'])}[/]" if rec["name"] else ""
    command = rec["init_command"] or ""
    command = escape(command if len(command) <= 40 else command[:39] + "…")
    init = (
        f"init {rec['init_host_pid']} ({command})"
        if rec["init_host_pid"] is not None
        else "no init"
    )
    owner = "?" if rec["owner_uid"] is None else user_name(rec["owner_uid"])
    inferred = " (parent inferred)" if rec["parent_inferred"] else ""
    return (
        f"[cyan]pid:[{rec['id']}][/]{name} level {rec['level']}  {init}  "
        f"tasks {rec['tasks']}/{rec['tasks_total']}  owner {owner}{inferred}"
    )


@click.command("ls")
@click.option("--flat", is_flag=True, help="A table instead of a tree.")
@json_option
@proc_option
def command(flat: bool, as_json: bool, proc: str) -> None:
    """Show the tree of PID namespaces: id, level, parent, init, tasks own/total, owner.

    Levels count from the namespace that owns --proc. Namespaces that hold no task of their
    own but have children still appear.
    """
    from pidns.procfs.snapshot import snapshot

    snap = snapshot(proc)
    name_namespaces(snap)
    records = [record(snap, ns) for ns in ordered(snap)]
    if as_json:
        emit_json(records)
        return
    for problem in snap.problems:
        warn(f"could not read: {problem}")
    if flat:
        headers = ["ID", "NAME", "LEVEL", "PARENT", "INIT", "TASKS", "TOTAL", "OWNER", "COMMAND"]
        rows = [
            [
                str(r["id"]),
                r["name"] or "-",
                str(r["level"]),
                "-" if r["parent"] is None else str(r["parent"]),
                "-" if r["init_host_pid"] is None else str(r["init_host_pid"]),
                str(r["tasks"]),
                str(r["tasks_total"]),
                "?" if r["owner_uid"] is None else user_name(r["owner_uid"]),
                r["init_command"] or "",
            ]
            for r in records
        ]
        print_columns(headers, rows, left={"NAME", "OWNER", "COMMAND"})
        return
    out = console()
    from rich.tree import Tree

    nodes: dict[int, Tree] = {}
    roots: list[Tree] = []
    for r in records:
        node = Tree(label(r))
        parent = nodes.get(r["parent"]) if r["parent"] is not None else None
        if parent is None:
            roots.append(node)
        else:
            parent.children.append(node)
        nodes[r["id"]] = node
    for root in roots:
        out.print(root)
