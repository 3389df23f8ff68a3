"""Renderers of translated proc files, on captured bytes."""

from __future__ import annotations

import pytest

from pidns.view.files.children import render_children
from pidns.view.files.ids import TaskIds, task_ids
from pidns.view.files.procstat import boottime_offset_ns
from pidns.view.files.sched import render_sched
from pidns.view.files.stat import render_stat, shift_start_time, translate_stat
from pidns.view.files.status import render_status, translate_status
from pidns.view.files.uptime import shift_uptime
from pidns.view.files.userids import ReaderIds, parse_id_map, render_user_ids

STATUS = (
    b"Name:\tsleep\nState:\tS (sleeping)\nTgid:\t5001\nNgid:\t0\nPid:\t5001\nPPid:\t5000\n"
    b"TracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nNStgid:\t5001\t2\nNSpid:\t5001\t2\n"
    b"NSpgid:\t4000\t0\nNSsid:\t4000\t0\nThreads:\t1\n"
)
STAT = b"5001 (sl) eep) S 5000 4000 4000 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 123 0 0 0 11 12 13\n"
HOST_TO_NS = {5000: 1, 5001: 2}.get


def to_ns(pid: int) -> int:
    return HOST_TO_NS(pid) or 0


def test_status_translates_ids_and_chains() -> None:
    out = render_status(STATUS, task_ids(STATUS, 1, to_ns)).decode()
    assert "Tgid:\t2\n" in out and "Pid:\t2\n" in out and "PPid:\t1\n" in out
    assert "NSpid:\t2\n" in out and "NSpgid:\t0\n" in out and "Ngid:\t0\n" in out


def test_stat_splits_at_last_paren_and_hides_addresses() -> None:
    ids = task_ids(STATUS, 1, to_ns)
    fields = render_stat(STAT, ids, to_ns, permitted=False).rsplit(b") ", 1)[1].split()
    assert render_stat(STAT, ids, to_ns).startswith(b"2 (sl) eep) S 1 0 0 0 -1 ")
    assert fields[23:26] == [b"1", b"1", b"0"]


def test_children_and_sched() -> None:
    assert render_children(b"5001 777 ", to_ns) == b"2 "
    assert render_sched(b"sleep (5001, #threads: 1)\n---\n", 2) == b"sleep (2, #threads: 1)\n---\n"


def test_translate_status_is_render_status_in_one_pass() -> None:
    for level in (0, 1):
        assert translate_status(STATUS, level, to_ns) == render_status(
            STATUS, task_ids(STATUS, level, to_ns)
        )
    without_ngid = STATUS.replace(b"Ngid:\t0\n", b"")
    assert translate_status(without_ngid, 1, to_ns) == render_status(
        without_ngid, task_ids(without_ngid, 1, to_ns)
    )
    traced = STATUS.replace(b"TracerPid:\t0", b"TracerPid:\t5000")
    assert b"TracerPid:\t1\n" in translate_status(traced, 1, to_ns)
    with pytest.raises(ValueError):
        translate_status(STATUS, 2, to_ns)


def test_translate_stat_asks_status_only_for_a_group_without_leader() -> None:
    ids = task_ids(STATUS, 1, to_ns)
    asked: list[int] = []

    def chains() -> TaskIds:
        asked.append(1)
        return ids

    # pgrp/session 4000: no number in the namespace. With its leader alive that is 0 there...
    alive = translate_stat(STAT, 2, to_ns, chains, lambda pid: True)
    assert alive == render_stat(STAT, ids, to_ns) and not asked
    # ...and without it only the status chains can tell (here: 0 as well).
    gone = translate_stat(STAT, 2, to_ns, chains, lambda pid: False)
    assert gone == render_stat(STAT, ids, to_ns) and asked
    visible = STAT.replace(b" 4000 4000 0 -1 ", b" 5000 5000 0 5000 ")
    out = translate_stat(visible, 2, to_ns, chains, lambda pid: True)
    assert out.startswith(b"2 (sl) eep) S 1 1 1 0 1 ")
    assert translate_stat(STAT, 2, to_ns, chains, lambda pid: True, permitted=False) == render_stat(
        STAT, ids, to_ns, permitted=False
    )


def test_user_ids_through_several_ranges_keep_the_kernels_spacing() -> None:
    status = (
        b"Name:\tx\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t5\nPid:\t5\nPPid:\t1\n"
        b"TracerPid:\t0\nUid:\t1000\t1000\t0\t7\nGid:\t100\t100\t100\t100\nFDSize:\t64\n"
        b"Groups:\t24 100 5000 \nNStgid:\t5\n"
    )
    ids = ReaderIds(
        uids=parse_id_map(b"         0       1000          1\n         1          0          5\n"),
        gids=parse_id_map(b"0 100 1\n"),
        overflow_uid=65534,
        overflow_gid=65533,
    )
    assert render_user_ids(status, ids) == status.replace(
        b"Uid:\t1000\t1000\t0\t7", b"Uid:\t0\t0\t1\t65534"
    ).replace(b"Gid:\t100\t100\t100\t100", b"Gid:\t0\t0\t0\t0").replace(
        b"Groups:\t24 100 5000 ", b"Groups:\t65533 0 65533 "
    )
    assert render_user_ids(b"Name:\tx\n", ids) == b"Name:\tx\n"  # no ids: as it was


def test_start_time_in_the_readers_time_namespace() -> None:
    """Field 22 moved by the reader's CLOCK_BOOTTIME offset in u64 nanoseconds, as the kernel
    adds it: whole seconds exactly; a task older than the clock's zero wraps."""
    second = 1_000_000_000
    out = shift_start_time(STAT, -1 * second, 100)
    assert out.split()[22] == b"23"  # 123 ticks less 100 (comm holds a space: field N is [N])
    assert out.replace(b" 23 ", b" 123 ") == STAT and out.endswith(b"\n")
    assert shift_start_time(STAT, 0, 100) is STAT
    wrapped = shift_start_time(STAT, -2 * second, 100)
    assert int(wrapped.split()[22]) == ((123 * 10_000_000 - 2 * second) % (1 << 64)) // 10_000_000
    assert shift_start_time(STAT, 15_000_000, 100).split()[22] == b"124"  # 1.5 ticks: floor
    with pytest.raises(ValueError):
        shift_start_time(b"1 (x) S 0\n", second, 100)


def test_offsets_and_uptime_of_a_reader_in_a_time_namespace() -> None:
    offsets = b"monotonic      -2819         0\nboottime       -2819 500000000\n"
    assert boottime_offset_ns(offsets) == -2819 * 10**9 + 5 * 10**8
    assert boottime_offset_ns(b"") == 0
    assert shift_uptime(b"3000.25 5000.00\n", -2819 * 10**9) == b"181.25 5000.00\n"
    assert shift_uptime(b"3000.25 5000.00\n", -2818 * 10**9 - 5 * 10**8) == b"181.75 5000.00\n"
    assert shift_uptime(b"10.00 1.00\n", 0) == b"10.00 1.00\n"
