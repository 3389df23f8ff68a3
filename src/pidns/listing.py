"""The namespace list as `pidns ls --json` prints it (and `pidns export` serves it): records in
tree order, with the names `pidns run --name` gave, their containers, zombies and whether their
init reaps."""

from __future__ import annotations

import os
import time

from pidns.model import PidNamespace, Snapshot

TYPE_CHECKING = False  # typing only for the type checker: `ps --json` imports command_line
if TYPE_CHECKING:
    from typing import Any

    from pidns.containers import Labels


def command_line(cmdline: list[str], comm: str) -> str:
    """What ps shows as COMMAND: the argv, or [comm] for tasks without one (kernel threads, zombies)."""
    return " ".join(cmdline) if cmdline else f"[{comm}]"


# A zombie child of pid 1 older than this means pid 1 does not reap: a reaping init collects
# a child within microseconds of its exit, so only a child that died in the last instant of a
# long life could be mistaken (its age is since it started: /proc keeps no time of death).
REAP_GRACE = 5.0


def reaping(snap: Snapshot) -> dict[int, tuple[int, bool | None]]:
    """Namespace inode -> (its own zombies, whether its init reaps; None without an init)."""
    zombies: dict[int, int] = {}
    stuck: set[int] = set()
    try:
        with open(f"{snap.proc}/stat", "rb") as f:
            btime = next(float(ln.split()[1]) for ln in f if ln.startswith(b"btime "))
    except (OSError, StopIteration, ValueError):
        btime = None
    ticks = os.sysconf("SC_CLK_TCK")
    now = time.time()
    for task in snap.tasks.values():
        if task.state != "Z" or task.ns_ino is None:
            continue
        zombies[task.ns_ino] = zombies.get(task.ns_ino, 0) + 1
        ns = snap.by_ino(task.ns_ino)
        if ns is None or ns.init is None or task.ppid != ns.init or btime is None:
            continue
        if now - (btime + task.start_time / ticks) > REAP_GRACE:
            stuck.add(ns.ino)
    return {
        ns.ino: (zombies.get(ns.ino, 0), None if ns.init is None else ns.ino not in stuck)
        for ns in snap.namespaces.values()
    }


def record(
    snap: Snapshot,
    ns: PidNamespace,
    labels: Labels | None = None,
    health: dict[int, tuple[int, bool | None]] | None = None,
) -> dict[str, Any]:
    init = snap.tasks.get(ns.init) if ns.init is not None else None
    container = labels.by_ns.get(ns.ino) if labels is not None else None
    zombies, reaps = (health or {}).get(ns.ino, (0, None))
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
        "container": container.to_json() if container is not None else None,
        "container_own": labels is not None and ns.ino in labels.own,
        "zombies": zombies,
        "init_reaps": reaps,
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
