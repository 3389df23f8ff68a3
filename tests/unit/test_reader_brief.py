"""The brief reading of a proc tree (status only where the pid chain needs it) against the full
one, on synthetic trees whose files agree with each other as the kernel's do."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pidns.model import Task
from pidns.plain import fields as field_names
from pidns.procfs.reader import ProcReader

ROOT_NS, CHILD_NS = 4026531836, 4026532200

TASK = st.fixed_dictionaries(
    {
        "level": st.integers(min_value=0, max_value=2),
        "ppid": st.integers(min_value=0, max_value=60),
        "pgrp": st.integers(min_value=0, max_value=60),
        "session": st.integers(min_value=0, max_value=60),
        "uids": st.tuples(*[st.integers(min_value=0, max_value=70000)] * 4),
        "gids": st.tuples(*[st.integers(min_value=0, max_value=70000)] * 4),
        "tracer": st.integers(min_value=0, max_value=60),
        "comm": st.text(st.characters(codec="ascii", exclude_characters="\0/"), max_size=15),
        "state": st.sampled_from("RSDZTI"),
    }
)


def _write(root: Path, pid: int, t: dict[str, object]) -> None:
    d = root / str(pid)
    (d / "ns").mkdir(parents=True)
    level = int(t["level"])  # type: ignore[call-overload]
    chain = (pid, *range(level + 1, 1, -1))[: level + 1]
    ns = ROOT_NS if level == 0 else CHILD_NS + level
    uids, gids = t["uids"], t["gids"]
    assert isinstance(uids, tuple) and isinstance(gids, tuple)
    pgrp, session = t["pgrp"], t["session"]
    status = (
        f"Name:\t{t['comm']}\nUmask:\t0022\nState:\t{t['state']} (x)\nTgid:\t{pid}\nNgid:\t0\n"
        f"Pid:\t{pid}\nPPid:\t{t['ppid']}\nTracerPid:\t{t['tracer']}\n"
        f"Uid:\t{uids[0]}\t{uids[1]}\t{uids[2]}\t{uids[3]}\n"
        f"Gid:\t{gids[0]}\t{gids[1]}\t{gids[2]}\t{gids[3]}\n"
        "FDSize:\t64\nGroups:\t\n"
        f"NStgid:\t{' '.join(map(str, chain))}\nNSpid:\t{' '.join(map(str, chain))}\n"
        f"NSpgid:\t{pgrp}{' 1' * level}\nNSsid:\t{session}{' 1' * level}\n"
    )
    stat = (
        f"{pid} ({t['comm']}) {t['state']} {t['ppid']} {pgrp} {session} 0 -1 4194560"
        f" 1 0 0 0 0 0 0 0 20 0 1 0 {1000 + pid} 0 0\n"
    )
    (d / "status").write_text(status)
    (d / "stat").write_text(stat)
    (d / "cmdline").write_bytes(b"prog\0arg\0")
    os.symlink(f"pid:[{ns}]", d / "ns" / "pid")
    (d / "task").mkdir()
    os.chown(d, uids[1], gids[1])  # the kernel owns /proc/PID by the effective ids


def _comparable(task: Task) -> dict[str, object]:
    fields = {name: getattr(task, name) for name in field_names(task)}
    for name in ("uids", "gids", "tracer_pid"):
        del fields[name]
    return fields


@pytest.mark.skipif(os.geteuid() != 0, reason="giving directories owners needs root")
@settings(max_examples=60, deadline=None)
@given(st.lists(TASK, min_size=1, max_size=12))
def test_brief_reading_agrees_with_full(tasks: list[dict[str, object]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for pid, t in enumerate(tasks, start=1):
            _write(root, pid, t)
        with ProcReader(tmp) as reader:
            full = reader.tasks()
        with ProcReader(tmp, brief=True) as reader:
            brief = reader.tasks()
    assert [_comparable(t) for t in full] == [_comparable(t) for t in brief]
    learned = False  # status is read until a level-0 task's link tells the tree's namespace
    for a, b in zip(full, brief, strict=True):  # both in readdir order
        spec = tasks[a.host_pid - 1]
        assert a.uids is not None and a.gids is not None and a.uids == spec["uids"]
        assert (a.euid, a.egid) == (a.uids[1], a.gids[1])
        if b.uids is None:
            assert learned and spec["level"] == 0
            assert b.gids is None and b.tracer_pid is None
        else:
            assert (b.uids, b.gids, b.tracer_pid) == (a.uids, a.gids, a.tracer_pid)
            assert not (learned and spec["level"] == 0)
        learned = learned or spec["level"] == 0
