"""Exit statuses of `pidns run`: the command's, 128+N, 125/126/127, and 2 for bad input."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.integration.runtime_util import background, nspid, pidns

pytestmark = pytest.mark.root


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["true"], 0),
        (["sh", "-c", "exit 3"], 3),
        (["sh", "-c", "kill -9 $$"], 137),
        (["sh", "-c", "kill -TERM $$"], 143),
    ],
)
@pytest.mark.parametrize("nest", ["1", "3"])
def test_command_status(argv: list[str], code: int, nest: str) -> None:
    result = pidns("run", "--nest", nest, "--", *argv)
    assert result.returncode == code, result.stderr
    assert result.stderr == ""


def test_no_init_status_and_signal() -> None:
    """With --no-init the command is pid 1: only a signal from outside (here SIGKILL, which an
    init gets from an ancestor namespace) ends it, and its parent outside reports the signal."""
    with background("--no-init", "--", "sleep", "60") as run:
        assert run.started["host_pid"] == run.started["inits"][-1]
        assert nspid(run.started["host_pid"])[-1] == 1
        os.kill(run.started["host_pid"], signal.SIGKILL)
        status, ended = run.finish()
    assert status == 137
    assert ended == {"event": "exit", "exit_code": 137, "signal": 9}


def one_error_line(stderr: str) -> str:
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith("pidns: error: ")
    assert "Traceback" not in stderr
    return stderr


def test_not_found_is_127() -> None:
    result = pidns("run", "--nest", "2", "--", "no-such-command-here")
    assert result.returncode == 127
    assert "no-such-command-here: command not found" in one_error_line(result.stderr)


def test_not_executable_is_126(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\ntrue\n")
    script.chmod(0o644)
    result = pidns("run", "--", str(script))
    assert result.returncode == 126
    assert str(script) in one_error_line(result.stderr)


def test_impossible_nesting_is_125() -> None:
    result = pidns("run", "--nest", "40", "--", "true")
    assert result.returncode == 125
    assert "too deeply nested" in one_error_line(result.stderr)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["run"], "no command"),
        (["run", "--"], "no command"),
        (["run", "--bogus", "--", "true"], "--bogus"),
        (["run", "--nest", "0", "--", "true"], "--nest"),
        (["run", "--nest", "x", "--", "true"], "--nest"),
        (["run", "--forward-to", "all", "--", "true"], "--forward-to"),
        (["run", "--kill-timeout", "-1", "--", "true"], "--kill-timeout"),
        (["run", "--name", "1abc", "--", "true"], "1abc"),
        (["run", "--name", "host", "--", "true"], "host"),
        (["run", "--name", "a/b", "--", "true"], "a/b"),
        (["exec", "--", "true"], "--ns"),
        (["exec", "--ns", "host"], "no command"),
    ],
)
def test_bad_input_is_2(args: list[str], named: str) -> None:
    result = pidns(*args)
    assert result.returncode == 2, result.stderr
    assert named in one_error_line(result.stderr)


def test_status_json_unwritable_is_125() -> None:
    result = pidns("run", "--status-json", "/no/such/dir/file", "--", "true")
    assert result.returncode == 125
    assert "/no/such/dir/file" in one_error_line(result.stderr)
