"""Bad input to the inspector: one line on stderr naming the input, exit 2 or 1, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


def pidns(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pidns.cli.main", *args], capture_output=True, text=True
    )


def dead_pid() -> str:
    child = subprocess.Popen(["true"])
    child.wait()
    return str(child.pid)


@pytest.mark.parametrize(
    ("args", "code", "named"),
    [
        (["ps", "--ns", "12345"], 2, "12345"),
        (["ps", "--ns", "pid:[777]"], 2, "pid:[777]"),
        (["ps", "--ns", "/etc/hostname"], 2, "/etc/hostname"),
        (["ps", "--ns", "/no/such/file"], 2, "/no/such/file"),
        (["ps", "--ns", "/proc/self/ns/net"], 2, "/proc/self/ns/net"),
        (["ps", "--ns", "@x1"], 2, "@x1"),
        (["ps", "--ns", "no such name"], 2, "no such name"),
        (["ps", "--ns", ""], 2, "empty"),
        (["ps", "-o", "pid,bogus"], 2, "bogus"),
        (["ps", "--bogus"], 2, "--bogus"),
        (["ps", "--proc", "/no/such/dir"], 2, "/no/such/dir"),
        (["translate", "0", "--to", "host"], 2, "0"),
        (["translate", "1"], 2, "--to"),
        (["translate", "999999", "--from", "host", "--to", "host"], 1, "999999"),
        (["ls", "--proc", "/etc/hostname"], 2, "/etc/hostname"),
        (["nosuchcommand"], 2, "nosuchcommand"),
    ],
)
def test_bad_input(args: list[str], code: int, named: str) -> None:
    result = pidns(*args)
    assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("pidns: error: ")
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_dead_pid_designator() -> None:
    pid = dead_pid()
    result = pidns("ps", "--ns", f"@{pid}")
    assert result.returncode == 2
    assert f"@{pid}" in result.stderr and result.stderr.count("\n") == 1


def test_help_lists_every_command() -> None:
    """The static top-level help (printed without loading click) names every command, and every
    command it names loads and answers --help."""
    from pidns.cli.commands import COMMANDS

    fast = pidns("--help").stdout
    for name in COMMANDS:
        assert f"  {name} " in fast
        sub = pidns(name, "--help")
        assert sub.returncode == 0, sub.stderr
        assert sub.stdout.startswith(f"Usage: pidns {name} ")
