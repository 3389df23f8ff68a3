"""Parsers on /proc bytes captured from a real kernel (tests/unit/fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pidns.procfs.parse import (
    parse_cmdline,
    parse_ns_link,
    parse_stat,
    parse_status,
    stat_state_threads,
)

FIXTURES = Path(__file__).with_name("fixtures")


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.bin").read_bytes()


def test_stat_comm_with_spaces_and_parens() -> None:
    stat = parse_stat(fixture("comm_paren_stat"))
    assert stat.comm == "x) (y z)"
    assert stat.pid == 4784
    assert stat.state == "S"
    assert (stat.ppid, stat.pgrp, stat.session) == (4743, 4740, 1084)
    assert stat.tpgid == -1  # no controlling terminal
    assert stat.num_threads == 2
    assert stat.start_time == 53626
    assert stat_state_threads(fixture("comm_paren_stat")) == ("S", 2)  # the quick reader agrees


def test_status_of_a_process() -> None:
    status = parse_status(fixture("comm_paren_status"))
    assert (status.tgid, status.pid, status.ppid) == (4784, 4784, 4743)
    assert status.nspid == (4784,)
    assert status.state == "S"
    assert status.uid == (0, 0, 0, 0)


def test_status_of_a_thread_names_its_leader() -> None:
    status = parse_status(fixture("thread_status"))
    assert status.pid == 4785
    assert status.tgid == 4784
    assert status.nstgid == (4784,)
    assert status.nspid == (4785,)


def test_zombie() -> None:
    status = parse_status(fixture("zombie_status"))
    stat = parse_stat(fixture("zombie_stat"))
    assert status.state == stat.state == "Z"
    assert parse_cmdline(fixture("zombie_cmdline")) == []


def test_nested_task_with_invisible_group_leader() -> None:
    """A level-2 task: three numbers per chain; its group and session leaders are 0 below level 0."""
    status = parse_status(fixture("nested_status"))
    assert status.nspid == (4820, 5, 2)
    assert status.nstgid == (4820, 5, 2)
    assert status.nspgid == (4740, 0, 0)
    assert status.nssid == (1084, 0, 0)
    assert parse_cmdline(fixture("nested_cmdline")) == ["sleep", "5"]


def test_kernel_thread() -> None:
    stat = parse_stat(fixture("kthread_stat"))
    assert (stat.pid, stat.comm, stat.ppid) == (2, "kthreadd", 0)
    assert parse_cmdline(fixture("kthread_cmdline")) == []


def test_cmdline_keeps_empty_arguments_and_odd_bytes() -> None:
    assert parse_cmdline(b"a\0\0b\0") == ["a", "", "b"]
    assert parse_cmdline(b"no-trailing-nul") == ["no-trailing-nul"]
    assert parse_cmdline(b"\xff\0") == ["\udcff"]


@pytest.mark.parametrize("data", [b"", b"12 (unterminated", b"12 (x) S 1"])
def test_bad_stat_is_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_stat(data)
    with pytest.raises(ValueError):
        stat_state_threads(data)


def test_status_cut_short_is_value_error() -> None:
    with pytest.raises(ValueError):
        parse_status(fixture("comm_paren_status")[:60])


def test_ns_link() -> None:
    assert parse_ns_link("pid:[4026531836]") == 4026531836
    with pytest.raises(ValueError):
        parse_ns_link("/dev/null")


def test_fast_and_line_parsers_agree_on_every_live_task() -> None:
    """The regex path and the line-by-line path read the same fields from real status files."""
    import os

    from pidns.procfs.parse import _parse_status_lines

    compared = 0
    for name in [n for n in os.listdir("/proc") if n.isdigit()] + [
        f.stem for f in FIXTURES.glob("*_status.bin")
    ]:
        try:
            data = (
                (FIXTURES / f"{name}.bin").read_bytes()
                if not name.isdigit()
                else Path(f"/proc/{name}/status").read_bytes()
            )
        except OSError:
            continue
        assert parse_status(data) == _parse_status_lines(data)
        compared += 1
    assert compared > 5


def test_status_without_ns_lines_falls_back() -> None:
    data = fixture("comm_paren_status")
    trimmed = b"\n".join(line for line in data.split(b"\n") if not line.startswith(b"NS"))
    status = parse_status(trimmed)
    assert status.nspid == (4784,)
    assert status.nspgid == ()


def test_status_ids() -> None:
    from pidns.procfs.parse import parse_status_ids

    assert parse_status_ids(fixture("comm_paren_status")) == ((0, 0, 0, 0), (0, 0, 0, 0))
    with pytest.raises(ValueError):
        parse_status_ids(b"Name:\tx\n")
