"""Placing fork/exit events in namespaces, on synthetic events over a fixture proc tree (the
integration tests check the same against the kernel's proc connector)."""

from __future__ import annotations

import os
from pathlib import Path

from pidns.export.events import EventCounter, boottime
from pidns.kernel.connector import PROC_EVENT_EXIT, PROC_EVENT_FORK, Event


def counter(tmp: Path, links: dict[int, int]) -> EventCounter:
    for pid, ino in links.items():
        (tmp / str(pid) / "ns").mkdir(parents=True)
        os.symlink(f"pid:[{ino}]", tmp / str(pid) / "ns" / "pid")
    events = EventCounter(str(tmp))
    events._proc_fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
    return events


def test_forks_and_exits_are_counted_where_the_task_lives(tmp_path: Path) -> None:
    events = counter(tmp_path, {100: 555})
    try:
        events.seed([(1, 111)])
        events._handle(
            [
                Event(PROC_EVENT_FORK, 100, 100, 1),  # a process: its ns/pid link tells
                Event(PROC_EVENT_FORK, 101, 100, 1),  # a thread of it: its group's namespace
                Event(PROC_EVENT_FORK, 200, 200, 100),  # gone before its link was read: parent's
            ]
        )
        assert events.counts() == ({555: 3}, {})
        events._handle(
            [
                Event(PROC_EVENT_EXIT, 101, 100, 1),
                Event(PROC_EVENT_EXIT, 200, 200, 100),
                Event(PROC_EVENT_EXIT, 100, 100, 1),
            ]
        )
        assert events.counts() == ({555: 3}, {555: 3})
        exited = events.exit_time(100)
        assert exited is not None and exited <= boottime()
        assert events.exit_time(101) is None  # threads leave no zombie behind

        later = boottime() + 1
        events.prune(alive={111}, zombies={100}, since=later, live={1})
        assert events.counts() == ({}, {})  # namespace 555 is gone: its counters with it
        assert events.exit_time(100) == exited  # still a zombie
        events.prune(alive={111}, zombies=set(), since=later, live={1})
        assert events.exit_time(100) is None
    finally:
        events.close()


def test_a_namespace_seen_after_the_snapshot_keeps_its_counts(tmp_path: Path) -> None:
    events = counter(tmp_path, {300: 777})
    try:
        before = boottime()
        events._handle([Event(PROC_EVENT_FORK, 300, 300, 1)])
        events.prune(alive=set(), zombies=set(), since=before, live=set())
        assert events.counts() == ({777: 1}, {})  # born after that snapshot was taken
    finally:
        events.close()
