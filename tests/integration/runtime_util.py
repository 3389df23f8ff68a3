"""Helpers for the runtime tests: run the CLI, start it in the background, look for leftovers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

PIDNS = [sys.executable, "-m", "pidns.cli.main"]


def pidns(*args: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PIDNS, *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )


class Background:
    """`pidns run --status-json` in the background; `started` is its start record."""

    def __init__(self, *args: str, **kwargs: Any) -> None:
        read, write = os.pipe()
        self.proc = subprocess.Popen(
            [*PIDNS, "run", "--status-json", f"/dev/fd/{write}", *args],
            pass_fds=(write,),
            **kwargs,
        )
        os.close(write)
        self._status = os.fdopen(read)
        line = self._status.readline()
        if not line:
            self.proc.wait(10)
            raise AssertionError(f"pidns run ended before starting: {self.proc.returncode}")
        self.started: dict[str, Any] = json.loads(line)

    def finish(self, timeout: float = 30) -> tuple[int, dict[str, Any]]:
        code = self.proc.wait(timeout)
        line = self._status.readline()
        return code, json.loads(line) if line else {}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # forwarded: the launcher ends normally and drops its name
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._status.close()


@contextlib.contextmanager
def background(*args: str, **kwargs: Any) -> Iterator[Background]:
    run = Background(*args, **kwargs)
    try:
        yield run
    finally:
        run.close()


def in_namespace(ino: int) -> list[int]:
    """Host pids of live processes whose PID namespace has inode ino."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{name}/ns/pid").st_ino == ino:
                found.append(int(name))
    return found


def nspid(host_pid: int) -> list[int]:
    with open(f"/proc/{host_pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    raise AssertionError("no NSpid line")


def kill_quietly(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
