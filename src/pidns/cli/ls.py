"""`pidns ls`: the namespace tree."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from pidns.cli.options import json_option, no_containers_option, proc_option, runtime_cli_option
from pidns.cli.output import console, emit_json, print_columns, user_name, warn
from pidns.listing import name_namespaces, ordered, reaping, record
from pidns.model import Snapshot

if TYPE_CHECKING:
    from pidns.containers import Labels


def container_text(rec: dict[str, Any]) -> str:
    """`podman:web (08e31f79f285)`, `k8s:shop/cart/app`; `in podman:web` for a namespace made
    inside that container."""
    from pidns.containers import Container

    data = rec["container"]
    if data is None:
        return ""
    c = Container(**data)
    text = c.label if c.label.endswith(c.short_id) else f"{c.label} ({c.short_id})"
    return text if rec["container_own"] else f"in {c.label}"


def container_labels(snap: Snapshot) -> Labels:
    from pidns.containers import label

    return label(snap)


def label(rec: dict[str, Any]) -> str:
    name = f" [bold]{escape(rec['name'])}[/]" if rec["name"] else ""
    container = container_text(rec)
    if container:
        name += f" [green]{escape(container)}[/]"
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
        f"tasks {rec['tasks']}/{rec['tasks_total']}  owner {owner}{inferred}{health(rec)}"
    )


def health(rec: dict[str, Any]) -> str:
    text = f"  [yellow]zombies {rec['zombies']}[/]" if rec["zombies"] else ""
    if rec["init_reaps"] is False:
        text += "  [red]init does not reap[/]"
    return text


@click.command("ls")
@click.option("--flat", is_flag=True, help="A table instead of a tree.")
@no_containers_option
@runtime_cli_option
@json_option
@proc_option
def command(flat: bool, no_containers: bool, as_json: bool, proc: str) -> None:
    """Show the tree of PID namespaces: id, level, parent, init, tasks own/total, owner, the
    container each belongs to, its zombies, and whether its init reaps them.

    Levels count from the namespace that owns --proc. Namespaces that hold no task of their
    own but have children still appear.
    """
    from pidns.procfs.snapshot import snapshot

    snap = snapshot(proc)
    name_namespaces(snap)
    labels = None if no_containers else container_labels(snap)
    health = reaping(snap)
    records = [record(snap, ns, labels, health) for ns in ordered(snap)]
    problems = snap.problems + (labels.problems if labels is not None else [])
    for problem in problems:
        warn(f"could not read: {problem}")
    if as_json:
        emit_json(records)
        return
    if flat:
        headers = ["ID", "NAME", "CONTAINER", "LEVEL", "PARENT", "INIT", "TASKS", "TOTAL"]
        headers += ["ZOMBIES", "REAPS", "OWNER", "COMMAND"]
        rows = [
            [
                str(r["id"]),
                r["name"] or "-",
                container_text(r) or "-",
                str(r["level"]),
                "-" if r["parent"] is None else str(r["parent"]),
                "-" if r["init_host_pid"] is None else str(r["init_host_pid"]),
                str(r["tasks"]),
                str(r["tasks_total"]),
                str(r["zombies"]),
                {True: "yes", False: "no", None: "-"}[r["init_reaps"]],
                "?" if r["owner_uid"] is None else user_name(r["owner_uid"]),
                r["init_command"] or "",
            ]
            for r in records
        ]
        print_columns(headers, rows, left={"NAME", "CONTAINER", "OWNER", "COMMAND"})
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
