"""Visibility and translation on synthetic snapshots: random namespace trees checked against
the kernel's rules stated independently (subtree membership, numbers per level)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from pidns.ids import HostPid, NsId
from pidns.model import PidNamespace, Snapshot, Task, count_tasks


def make_task(
    pid: int,
    chain: tuple[int, ...],
    ppid: int,
    home: int,
    leader: tuple[int, ...] | None = None,
) -> Task:
    """A task; `leader` is the thread-group leader's chain when the task is a thread."""
    return Task(
        host_pid=HostPid(pid),
        tgid=HostPid(leader[0] if leader else pid),
        ppid=HostPid(ppid),
        tracer_pid=HostPid(0),
        nstgid=leader or chain,
        nspid=chain,
        nspgid=chain,
        nssid=chain,
        uids=(0, 0, 0, 0),
        gids=(0, 0, 0, 0),
        euid=0,
        egid=0,
        state="S",
        comm="t",
        cmdline=[],
        start_time=pid,
        tty_nr=0,
        tpgid=-1,
        num_threads=1,
        ns_ino=home,
    )


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    """A random namespace tree with tasks placed by the kernel's rules: a child lives in its
    parent's namespace or below, and gets the next free number at every level above it."""
    n_ns = draw(st.integers(min_value=1, max_value=6))
    parents = [None] + [draw(st.integers(min_value=0, max_value=i - 1)) for i in range(1, n_ns)]
    levels: list[int] = []
    for p in parents:
        levels.append(0 if p is None else levels[p] + 1)
    spaces = {
        i: PidNamespace(
            id=NsId(1, 1000 + i), level=levels[i], parent=None if p is None else NsId(1, 1000 + p)
        )
        for i, p in enumerate(parents)
    }

    def path(i: int) -> list[int]:
        out = [i]
        while parents[out[-1]] is not None:
            out.append(parents[out[-1]])  # type: ignore[arg-type]
        return out[::-1]

    next_nr = dict.fromkeys(range(n_ns), 1)
    tasks: dict[HostPid, Task] = {}
    homes: list[int] = []
    for pid in range(1, draw(st.integers(min_value=1, max_value=25)) + 1):
        attach = draw(st.booleans()) if tasks else False
        if attach:
            parent = int(draw(st.sampled_from(sorted(tasks))))
            below = [i for i in range(n_ns) if homes[parent - 1] in path(i)]
            home = draw(st.sampled_from(below))
        else:
            parent, home = 0, draw(st.integers(min_value=0, max_value=n_ns - 1))
        chain = []
        for ns in path(home):
            chain.append(next_nr[ns])
            next_nr[ns] += 1
        homes.append(home)
        tasks[HostPid(pid)] = make_task(pid, tuple(chain), parent, 1000 + home)
    snap = Snapshot(
        tasks=tasks,
        namespaces={ns.id: ns for ns in spaces.values()},
        root=spaces[0].id,
    )
    count_tasks(snap, tasks.values())
    return snap


def subtree(snap: Snapshot, ns: PidNamespace) -> set[int]:
    found = {ns.id.ino}
    grew = True
    while grew:
        grew = False
        for other in snap.namespaces.values():
            if other.parent and other.parent.ino in found and other.id.ino not in found:
                found.add(other.id.ino)
                grew = True
    return found


@settings(max_examples=300)
@given(snapshots())
def test_visible_exactly_in_the_home_namespace_and_its_ancestors(snap: Snapshot) -> None:
    for ns in snap.namespaces.values():
        members = subtree(snap, ns)
        for task in snap.tasks.values():
            assert snap.visible(task, ns) == (task.ns_ino in members)


@settings(max_examples=300)
@given(snapshots())
def test_views_are_numbered_by_the_viewer(snap: Snapshot) -> None:
    for ns in snap.namespaces.values():
        views = snap.views(ns)
        assert len(views) == ns.tasks_total
        assert [v.pid for v in views] == sorted(v.pid for v in views)
        members = subtree(snap, ns)
        for v in views:
            assert v.nspid == v.task.nspid[ns.level :]
            assert v.pid == v.nspid[0]
            parent = snap.tasks.get(v.task.ppid)
            if parent is None or parent.ns_ino not in members:
                assert v.ppid == 0
            else:
                assert v.ppid == parent.nspid[ns.level]


@settings(max_examples=300)
@given(snapshots())
def test_translation_round_trips_and_refuses_the_invisible(snap: Snapshot) -> None:
    for a, b in itertools.product(snap.namespaces.values(), repeat=2):
        for v in snap.views(a):
            there = snap.translate(v.pid, a, b)
            if snap.visible(v.task, b):
                assert there is not None
                assert snap.translate(there, b, a) == v.pid
            else:
                assert there is None


def test_threads_are_found_but_not_listed_as_leaders() -> None:
    leader = make_task(10, (10, 1), 0, 1001)
    leader.threads = [make_task(11, (11, 2), 0, 1001, leader=(10, 1))]
    root = PidNamespace(id=NsId(1, 1000), level=0, parent=None)
    child = PidNamespace(id=NsId(1, 1001), level=1, parent=root.id)
    snap = Snapshot(
        tasks={HostPid(10): leader}, namespaces={root.id: root, child.id: child}, root=root.id
    )
    assert [v.pid for v in snap.views(child)] == [1]
    assert [v.pid for v in snap.views(child, threads=True)] == [1, 2]
    found = snap.find(2, child)
    assert found is not None and found.host_pid == 11
    view = snap.view(found, child)
    assert view is not None and view.tgid == 1
    assert snap.translate(2, child, root) == 11


def test_unknown_namespace_is_only_visible_from_the_root() -> None:
    task = make_task(5, (5, 3), 0, 1001)
    task.ns_ino = None
    root = PidNamespace(id=NsId(1, 1000), level=0, parent=None)
    child = PidNamespace(id=NsId(1, 1001), level=1, parent=root.id)
    snap = Snapshot(
        tasks={HostPid(5): task}, namespaces={root.id: root, child.id: child}, root=root.id
    )
    assert snap.visible(task, root)
    assert not snap.visible(task, child)
