"""Signals: the launcher forwards into the namespace, the init forwards to the command."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.integration.runtime_util import background

pytestmark = pytest.mark.root


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_to_launcher_reaches_command(sig: int, code: int) -> None:
    with background("--nest", "2", "--", "sleep", "60") as run:
        run.proc.send_signal(sig)
        status, ended = run.finish()
        assert status == code
        assert ended == {"event": "exit", "exit_code": code, "signal": sig}


def test_sigterm_to_init_from_outside_is_forwarded() -> None:
    """docs/kernel-proc.md §21: the kernel drops signals from an ancestor namespace to an init that
    neither handles nor blocks them; ours blocks them, takes them and forwards them."""
    with background("--", "sleep", "60") as run:
        os.kill(run.started["inits"][0], signal.SIGTERM)
        status, _ = run.finish()
        assert status == 143


SCRIPT = """
sleep {secs} & child=$!
trap 'true' TERM
echo ready
wait $child
wait $child
echo "child=$?"
"""


def test_forward_to_group_reaches_the_commands_children() -> None:
    with background(
        "--forward-to", "group", "--", "sh", "-c", SCRIPT.format(secs=60),
        stdout=subprocess.PIPE, text=True,
    ) as run:  # fmt: skip
        assert run.proc.stdout is not None
        assert run.proc.stdout.readline() == "ready\n"
        run.proc.send_signal(signal.SIGTERM)
        status, _ = run.finish()
        assert run.proc.stdout.read() == "child=143\n"
        assert status == 0


def test_forward_to_child_spares_its_children() -> None:
    with background(
        "--", "sh", "-c", SCRIPT.format(secs=1), stdout=subprocess.PIPE, text=True
    ) as run:
        assert run.proc.stdout is not None
        assert run.proc.stdout.readline() == "ready\n"
        run.proc.send_signal(signal.SIGTERM)
        status, _ = run.finish()
        assert run.proc.stdout.read() == "child=0\n"
        assert status == 0
