"""Nothing outlives `pidns run`: daemons, zombies, and the namespace when the launcher is killed."""

from __future__ import annotations

import contextlib
import os
import random
import signal

import pytest

from pidns.kernel import pidfd
from tests.integration.runtime_util import background, in_namespace, pidns

pytestmark = pytest.mark.root


def cmdlines_with(marker: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{name}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(name))
    return found


def test_setsid_daemon_is_gone_when_run_returns() -> None:
    seconds = str(random.randint(1_000_000, 9_000_000))
    result = pidns(
        "run",
        "--nest",
        "2",
        "--",
        "sh",
        "-c",
        f"setsid sleep {seconds} & setsid sh -c 'sleep {seconds}' &",
    )
    assert result.returncode == 0, result.stderr
    assert cmdlines_with(f"sleep\0{seconds}") == []


def test_daemon_ignoring_sigterm_is_killed_after_the_timeout() -> None:
    with background(
        "--kill-timeout",
        "0.2",
        "--",
        "sh",
        "-c",
        "setsid sh -c 'trap \"\" TERM; sleep 600' & exit 7",
    ) as run:
        status, _ = run.finish()
        assert status == 7
        assert in_namespace(run.started["ns"][0]) == []


def test_sigkill_to_launcher_kills_the_namespace_within_1s() -> None:
    with background("--nest", "2", "--", "sh", "-c", "sleep 600 & setsid sleep 600 & wait") as run:
        inner = run.started["ns"][-1]
        members = in_namespace(inner) + in_namespace(run.started["ns"][0])
        assert len(members) >= 4  # two inits, sh, two sleeps
        fds = [pidfd.open_pid(pid) for pid in members]
        try:
            run.proc.send_signal(signal.SIGKILL)
            run.proc.wait(5)
            for fd in fds:
                assert pidfd.wait_exit(fd, 1.0), "a process of the namespace survived 1 s"
        finally:
            for fd in fds:
                os.close(fd)


def test_no_zombie_after_an_orphan_exits() -> None:
    # A zombie is still listed by ps: the loop ends only once the orphan has been reaped.
    script = (
        "(sleep 0.2 &); ps -o ppid=,comm= -C sleep; "
        "while ps -C sleep >/dev/null; do sleep 0.05; done; ps -eo stat=,comm="
    )
    result = pidns("run", "--", "sh", "-c", script, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["1", "sleep"]  # the orphan went to our init
    states = [line.split()[0] for line in lines[1:]]
    assert states and not any(s.startswith("Z") for s in states), lines
