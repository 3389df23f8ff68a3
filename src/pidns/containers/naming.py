"""Naming a snapshot's namespaces after their containers (the reverse direction: ls, ps, which).

One /proc/PID/cgroup read per namespace (its init's, else a member's), and each container's
state files read at most once per command: labelling costs a few reads per container, not per task.
A namespace is labelled with the container its tasks' cgroup names; a namespace made inside a
container (a nested `pidns run`) carries the same container, and `Labels.own` tells which
namespace is the container's own (the topmost one with that container).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pidns.containers.cgroup import CgroupMatch, holds, match
from pidns.containers.nspawn import COMM as NSPAWN
from pidns.containers.nspawn import machine_name
from pidns.containers.record import Container
from pidns.containers.state import StateReader, StateRecord
from pidns.model import PidNamespace, Snapshot, Task


@dataclass(slots=True)
class Labels:
    by_ns: dict[int, Container] = field(default_factory=dict)  # namespace inode -> container
    own: set[int] = field(default_factory=set)  # inodes that are their container's own namespace
    problems: list[str] = field(default_factory=list)

    def of_task(self, snap: Snapshot, task: Task) -> Container | None:
        return self.by_ns.get(task.ns_ino) if task.ns_ino is not None else None


def describe(found: CgroupMatch, state: StateReader) -> Container:
    """A cgroup match completed from the runtime's state (name, pod) where it can be read."""
    record: StateRecord | None = None
    runtime = found.runtime
    if runtime == "docker":
        record = state.docker(found.id)
    elif runtime in ("podman", "crio"):
        record = state.storage(found.id)
    elif runtime == "containerd":
        record = state.containerd(found.id)
    elif runtime == "cri":  # a kubelet cgroupfs path: whichever CRI runtime has it
        record = state.containerd(found.id) or state.storage(found.id) or state.docker(found.id)
    if record is None:
        return Container(runtime, found.id, found.name, pod_uid=found.pod_uid)
    return Container(
        record.runtime,
        found.id,
        record.name if record.name is not None else found.name,
        record.pod,
        record.pod_namespace,
        record.pod_uid or found.pod_uid,
        record.sandbox,
    )


def label(snap: Snapshot, state: StateReader | None = None) -> Labels:
    """Containers of every namespace in snap below its root."""
    state = state if state is not None else StateReader()
    labels = Labels()
    members: dict[int, Task] = {}
    for task in snap.tasks.values():
        if task.ns_ino is not None and task.ns_ino not in members:
            members[task.ns_ino] = task
    seen: dict[tuple[str, str], Container] = {}
    unreadable = 0
    for ns in sorted(snap.namespaces.values(), key=lambda n: n.level):
        if ns.id == snap.root:
            continue
        pid = ns.init if ns.init is not None else getattr(members.get(ns.ino), "host_pid", None)
        if pid is None:
            continue
        try:
            with open(f"{snap.proc}/{pid}/cgroup", "rb") as f:
                data = f.read()
        except OSError:
            unreadable += 1
            continue
        found = match(data) or _by_spec(data, state) or _nspawned(snap, ns)
        parent = snap.namespaces.get(ns.parent) if ns.parent else None
        if found is None:
            # no cgroup of its own (a machine's payload keeps nspawn's): a namespace made
            # below a container's is inside that container
            inherited = labels.by_ns.get(parent.ino) if parent is not None else None
            if inherited is not None:
                labels.by_ns[ns.ino] = inherited
            continue
        key = (found.runtime, found.id)
        container = seen.get(key)
        if container is None:
            container = seen[key] = describe(found, state)
        labels.by_ns[ns.ino] = container
        if parent is None or labels.by_ns.get(parent.ino) != container:
            labels.own.add(ns.ino)
    if unreadable:
        labels.problems.append(f"the cgroups of {unreadable} namespaces' tasks (they exited)")
    for runtime in sorted({c.runtime for c in seen.values()}):
        why = state.why_not(runtime)
        if why is not None:
            labels.problems.append(f"container names: {why}")
    return labels


def _by_spec(data: bytes, state: StateReader) -> CgroupMatch | None:
    """A cgroup no layout names (ctr's /NAMESPACE/ID): the containerd task whose spec asked
    for it."""
    for record in state.containerd_all():
        if record.cgroups_path and holds(data, record.cgroups_path):
            return CgroupMatch("containerd", record.id)
    return None


def _nspawned(snap: Snapshot, ns: PidNamespace) -> CgroupMatch | None:
    """A machine nspawn runs without registering it: its init's parent is systemd-nspawn."""
    init = snap.tasks.get(ns.init) if ns.init is not None else None
    parent = snap.tasks.get(init.ppid) if init is not None else None
    if parent is None or parent.comm != NSPAWN or parent.ns_ino == ns.ino:
        return None
    name = machine_name(parent.cmdline)
    return CgroupMatch("machine", name) if name else None
