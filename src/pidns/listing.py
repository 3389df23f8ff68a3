"""The namespace list as `pidns ls --json` prints it (and `pidns export` serves it): records in
tree order, with the names `pidns run --name` gave."""

from __future__ import annotations

from typing import Any

from pidns.model import PidNamespace, Snapshot


def command_line(cmdline: list[str], comm: str) -> str:
    """What ps shows as COMMAND: the argv, or [comm] for tasks without one (kernel threads, zombies)."""
    return " ".join(cmdline) if cmdline else f"[{comm}]"


def record(snap: Snapshot, ns: PidNamespace) -> dict[str, Any]:
    init = snap.tasks.get(ns.init) if ns.init is not None else None
    return {
        "id": ns.id.ino,
        "level": ns.level,
        "parent": ns.parent.ino if ns.parent else None,
        "parent_inferred": ns.parent_inferred,
        "init_host_pid": ns.init,
        "init_command": command_line(init.cmdline, init.comm) if init else None,
        "tasks": ns.tasks,
        "tasks_total": ns.tasks_total,
        "owner_uid": ns.owner_uid,
        "userns": ns.userns,
        "name": ns.name,
    }


def name_namespaces(snap: Snapshot) -> None:
    """Give namespaces registered with `pidns run --name` their names."""
    from pidns.names import names_by_inode

    for ino, name in names_by_inode().items():
        ns = snap.by_ino(ino)
        if ns is not None:
            ns.name = name


def ordered(snap: Snapshot) -> list[PidNamespace]:
    """Depth-first from the root, children by inode: the order a tree is drawn in."""
    out: list[PidNamespace] = []
    tops = [ns for ns in snap.namespaces.values() if ns.parent not in snap.namespaces]

    def walk(ns: PidNamespace) -> None:
        out.append(ns)
        for child in snap.children(ns):
            walk(child)

    for top in sorted(tops, key=lambda n: (n.level, n.id.ino)):
        walk(top)
    return out
