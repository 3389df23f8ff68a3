"""Signals that arrive ignored. A background job of a non-interactive shell (`sh -c 'pidns run
-- CMD &'`) starts with SIGINT and SIGQUIT ignored: the launcher still forwards what it is sent,
and the command gets them ignored again, as it would have run without pidns."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.runtime_util import PIDNS

pytestmark = pytest.mark.root

# A command that takes the signal itself (Python may handle a signal that arrived ignored).
HANDLES = """
import signal, sys, time
signal.signal({sig}, lambda *_: sys.exit(7))
print("ready", flush=True)
time.sleep(60)
"""

AS_BACKGROUND_JOB = '"$@" & echo $!; wait $!'  # sh -c: "$@" starts with SIGINT, SIGQUIT ignored


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_signal_that_arrived_ignored_is_still_forwarded(sig: int) -> None:
    argv = [*PIDNS, "run", "--", sys.executable, "-c", HANDLES.format(sig=int(sig))]
    with subprocess.Popen(
        ["sh", "-c", AS_BACKGROUND_JOB, "sh", *argv], stdout=subprocess.PIPE, text=True
    ) as shell:
        assert shell.stdout is not None
        launcher = int(shell.stdout.readline())
        try:
            assert shell.stdout.readline() == "ready\n"
            os.kill(launcher, sig)
            assert shell.wait(30) == 7  # the shell's `wait` returns the launcher's status
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(launcher, signal.SIGTERM)  # forwarded: the command ends, and the shell


def _ignored_by(script: str) -> int:
    out = subprocess.run(["sh", "-c", script, "sh", *PIDNS], capture_output=True, text=True,
                         timeout=60, check=True).stdout  # fmt: skip
    line = next(x for x in out.splitlines() if x.startswith("SigIgn:"))
    return int(line.split()[1], 16) & ((1 << (signal.SIGINT - 1)) | (1 << (signal.SIGQUIT - 1)))


def test_command_keeps_the_dispositions_it_was_given() -> None:
    plain = _ignored_by("grep SigIgn: /proc/self/status & wait")
    through = _ignored_by('"$@" run -- grep SigIgn: /proc/self/status & wait')
    assert plain == (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGQUIT - 1))
    assert through == plain


def test_signal_tests_pass_when_the_suite_is_a_background_job() -> None:
    """`sh -c './go test &'`: the suite restores SIGINT and SIGQUIT for what it starts."""
    repo = Path(__file__).resolve().parents[2]
    pytest_argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "tests/integration/test_run_signals.py", "-k", "reaches_command"]  # fmt: skip
    result = subprocess.run(["sh", "-c", '"$@" & wait $!', "sh", *pytest_argv], cwd=repo,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:]
    assert "2 passed" in result.stdout.splitlines()[-1]


def test_exec_command_keeps_the_dispositions_it_was_given() -> None:
    import pidns

    with pidns.Sandbox() as sb:
        ns = f"@{sb.init_pids[-1]}"
        plain = _ignored_by("grep SigIgn: /proc/self/status & wait")
        through = _ignored_by(f'"$@" exec --ns {ns} -- grep SigIgn: /proc/self/status & wait')
    assert through == plain != 0
