"""`pidns ps`/`ls`/`translate` against the kernel: a procfs mounted for each namespace is the oracle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pidns.cli.ps import record
from pidns.ids import HostPid
from pidns.kernel import nsfs
from pidns.model import Snapshot, Task
from pidns.plain import fields as field_names
from pidns.procfs.parse import parse_status
from pidns.procfs.snapshot import snapshot
from pidns.translate import translate_kernel
from tests.nstree import PER_LEVEL, Tree, kernel_proc, nested_tree

pytestmark = pytest.mark.root


def pidns_json(*args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "pidns.cli.main", *args, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def kernel_tasks(proc: Path, threads: bool = False) -> dict[int, tuple[int, tuple[int, ...]]]:
    """pid -> (PPid, NSpid) for every task the kernel's procfs shows (threads via task/)."""
    found = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        dirs = list((entry / "task").iterdir()) if threads else [entry]
        for d in dirs:
            try:
                status = parse_status((d / "status").read_bytes())
            except (FileNotFoundError, ProcessLookupError):
                continue
            found[status.pid] = (status.ppid, status.nspid)
    return found


def ours(ns: int, threads: bool = False) -> dict[int, tuple[int, tuple[int, ...]]]:
    args = ["ps", "--ns", str(ns)] + (["-T"] if threads else [])
    return {r["pid"]: (r["ppid"], tuple(r["nspid"])) for r in pidns_json(*args)}


def compare_all_levels(tree: Tree) -> None:
    for level, init in enumerate(tree.inits, start=1):
        with kernel_proc(init) as proc:
            for threads in (False, True):
                assert ours(tree.ns_inode(level), threads) == kernel_tasks(proc, threads), (
                    f"level {level}, threads={threads}"
                )


def test_ps_matches_kernel_procfs_three_levels() -> None:
    with nested_tree(3) as tree:
        compare_all_levels(tree)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    depth=st.integers(min_value=1, max_value=4),
    kinds=st.lists(st.sampled_from(sorted(PER_LEVEL)), min_size=1, max_size=4, unique=True),
)
def test_ps_matches_kernel_procfs_random_trees(depth: int, kinds: list[str]) -> None:
    with nested_tree(depth, tuple(kinds)) as tree:
        compare_all_levels(tree)


def test_ps_fields_follow_the_namespace() -> None:
    """The zombie, thread leaders, the init's PPid 0 and pgid/sid 0 where the leader is invisible."""
    with nested_tree(2) as tree, kernel_proc(tree.inits[1]) as proc:
        rows = pidns_json("ps", "--ns", str(tree.ns_inode(2)))
        by_pid = {r["pid"]: r for r in rows}
        assert by_pid[1]["ppid"] == 0
        assert any(r["state"] == "Z" for r in rows)
        for pid, row in by_pid.items():
            status = parse_status((proc / str(pid) / "status").read_bytes())
            assert row["nspgid"] == list(status.nspgid)
            assert row["nssid"] == list(status.nssid)
            host = parse_status(Path(f"/proc/{row['host_pid']}/status").read_bytes())
            assert host.nspid[-len(row["nspid"]) :] == tuple(row["nspid"])
            assert (proc / str(pid) / "cmdline").read_bytes().split(b"\0")[0].decode() == (
                row["cmdline"][0] if row["cmdline"] else ""
            )


def test_ls_matches_lsns_and_ns_get_parent() -> None:
    """Ids and levels of the tree's namespaces (and the root) against lsns and NS_GET_PARENT.
    Other namespaces on the host come and go meanwhile, so only ours are compared."""
    with nested_tree(3) as tree:
        listed = {r["id"]: r for r in pidns_json("ls")}
        lsns = json.loads(
            subprocess.run(
                ["lsns", "-t", "pid", "--json", "-o", "NS"], capture_output=True, check=True
            ).stdout
        )["namespaces"]
        own = os.stat("/proc/self/ns/pid").st_ino
        ours = {own} | {tree.ns_inode(level) for level in (1, 2, 3)}
        assert ours <= {int(n["ns"]) for n in lsns}
        assert ours <= set(listed)
        for ino in ours:
            rec = listed[ino]
            # the host's init may refuse ptrace access even to root; our own link is as good
            fd = nsfs.open_ns(
                "/proc/self/ns/pid" if ino == own else f"/proc/{rec['init_host_pid']}/ns/pid"
            )
            depth, parent_ino, current = 0, None, fd
            try:
                while True:
                    try:
                        up = nsfs.parent(current)
                    except OSError:
                        break
                    if parent_ino is None:
                        parent_ino = nsfs.identity(up).ino
                    if current != fd:
                        os.close(current)
                    current = up
                    depth += 1
            finally:
                if current != fd:
                    os.close(current)
                os.close(fd)
            assert rec["level"] == depth
            assert rec["parent"] == parent_ino


def test_translation_kernel_and_model_agree() -> None:
    with nested_tree(3) as tree:
        snap = snapshot()
        tree_inos = {tree.ns_inode(level) for level in (1, 2, 3)}
        spaces = [snap.by_ino(tree.ns_inode(level)) for level in (1, 2, 3)]
        spaces.insert(0, snap.namespaces[snap.root] if snap.root else None)
        checked = 0
        for src in spaces:
            assert src is not None
            for dst in spaces:
                assert dst is not None
                for view in snap.views(src):
                    if view.task.ns_ino not in tree_inos:
                        continue  # other tasks on the host may exit meanwhile
                    kernel = translate_kernel(snap, view.pid, src, dst)
                    assert kernel == snap.translate(view.pid, src, dst), (view.pid, src, dst)
                    checked += 1
        assert checked > 50


def translate_cli(pid: int, src: int, dst: int) -> subprocess.CompletedProcess[str]:
    argv = ["translate", str(pid), "--from", str(src), "--to", str(dst)]
    return subprocess.run(
        [sys.executable, "-m", "pidns.cli.main", *argv], capture_output=True, text=True
    )


def test_translate_cli() -> None:
    with nested_tree(2) as tree:
        inner, outer = tree.ns_inode(2), tree.ns_inode(1)
        result = translate_cli(1, inner, outer)
        assert result.returncode == 0, result.stderr
        with kernel_proc(tree.inits[0]) as proc:
            status = parse_status((proc / result.stdout.strip() / "status").read_bytes())
            assert status.nspid[-1] == 1 and len(status.nspid) == 2
        invisible = translate_cli(1, outer, inner)
        assert invisible.returncode == 1
        assert invisible.stderr.count("\n") == 1 and "no number in" in invisible.stderr


def _without_status_only_fields(task: Task) -> dict[str, Any]:
    fields = {name: getattr(task, name) for name in field_names(task)}
    for name in ("uids", "gids", "tracer_pid", "threads"):
        del fields[name]
    return fields


def _same_tasks(full: Snapshot, brief: Snapshot, pids: set[int]) -> None:
    for pid in pids:
        a, b = full.tasks[HostPid(pid)], brief.tasks[HostPid(pid)]
        for x, y in zip([a, *(a.threads or [])], [b, *(b.threads or [])], strict=True):
            assert _without_status_only_fields(x) == _without_status_only_fields(y), pid
            assert x.uids is not None and x.gids is not None
            assert (x.uid, x.egid) == (x.uids[1], x.gids[1])
            if y.uids is None:  # read without status: only a level-0 task may be
                assert y.level == 0 and y.gids is None and y.tracer_pid is None
            else:
                assert (y.uids, y.gids, y.tracer_pid) == (x.uids, x.gids, x.tracer_pid)


def _settle(proc: str) -> None:
    """Wait until the tree's processes have started their threads (two readings agree)."""

    def reading() -> list[dict[str, Any]]:
        snap = snapshot(proc, threads=True)
        return [_without_status_only_fields(t) for t in snap.all_tasks(threads=True)]

    for _ in range(100):
        if reading() == reading():
            return
        time.sleep(0.05)
    raise AssertionError(f"{proc} never settled")


def test_brief_reading_matches_the_full_one() -> None:
    """`ps` reads `status` only where the pid chain needs it: the same tasks and the same
    listing as reading every task's status, from the host and from each level's own procfs."""
    with nested_tree(3) as tree:
        for level, init in enumerate(tree.inits, start=1):
            with kernel_proc(init) as proc:
                _settle(str(proc))
                full = snapshot(str(proc), threads=True)
                brief = snapshot(str(proc), threads=True, brief=True)
                assert set(full.tasks) == set(brief.tasks), f"level {level}"
                _same_tasks(full, brief, set(full.tasks))
                # every level-0 task but the first (which tells the tree's own namespace)
                top = sum(t.level == 0 for t in brief.tasks.values())
                assert sum(t.uids is None for t in brief.tasks.values()) >= top - 1 > 0
                root_full = full.namespaces[full.root]  # type: ignore[index]
                root_brief = brief.namespaces[brief.root]  # type: ignore[index]
                assert [record(v) for v in full.views(root_full, threads=True)] == [
                    record(v) for v in brief.views(root_brief, threads=True)
                ]
        # From the host: the tree's tasks (status read, below level 0) and this process (not).
        full = snapshot(threads=True)
        brief = snapshot(threads=True, brief=True)
        inner = {
            pid
            for pid, t in full.tasks.items()
            if t.ns_ino in {tree.ns_inode(n) for n in (1, 2, 3)}
        }
        assert len(inner) > 3 and inner <= set(brief.tasks)
        assert all(brief.tasks[HostPid(p)].uids is not None for p in inner)
        _same_tasks(full, brief, {int(p) for p in inner})
        me = os.getpid()
        a, b = full.tasks[HostPid(me)], brief.tasks[HostPid(me)]
        assert b.uids is None and b.nspid == a.nspid == (me,) and b.ns_ino == a.ns_ino
        assert (b.uid, b.egid) == (os.geteuid(), os.getegid())
