"""Rootless: the same runs as an unprivileged user (uid 65534), through a user namespace."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.users import AS_NOBODY, installed_for_users

pytestmark = pytest.mark.root  # root is needed to become the unprivileged user


def userns_missing() -> str | None:
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            if int(f.read()) == 0:
                return "user.max_user_namespaces is 0"
    except OSError:
        return "no user namespaces in this kernel"
    try:
        with open("/proc/sys/kernel/unprivileged_userns_clone") as f:
            if f.read().strip() == "0":
                return "kernel.unprivileged_userns_clone is 0"
    except FileNotFoundError:
        pass
    return None


@pytest.fixture(autouse=True)
def _needs_userns() -> None:
    reason = userns_missing()
    if reason:
        pytest.skip(f"unprivileged user namespaces are disabled: {reason}")


# root's own places: nobody gets its defaults (a state directory root made is refused to it)
_ROOTS_OWN = ("XDG_RUNTIME_DIR", "HOME", "PIDNS_STATE_DIR")


def nobody_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _ROOTS_OWN}
    return {**env, "HOME": "/tmp"}


def nobody(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AS_NOBODY, *installed_for_users().argv(*args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=nobody_env(),
        cwd="/",
    )


def test_nested_run_as_nobody() -> None:
    script = "id -u; grep NSpid /proc/$$/status; ps -eo pid=,comm=; exit 4"
    result = nobody("run", "--nest", "2", "--", "sh", "-c", script)
    assert result.returncode == 4, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "0"  # mapped to root inside
    assert lines[1].split() == ["NSpid:", "2"]
    assert lines[2].split() == ["1", "pidns-init"]


def test_exit_codes_as_nobody() -> None:
    assert nobody("run", "--", "sh", "-c", "kill -TERM $$").returncode == 143
    assert nobody("run", "--", "no-such-command-here").returncode == 127


def test_no_user_as_nobody_is_125() -> None:
    result = nobody("run", "--no-user", "--nest", "2", "--", "true")
    assert result.returncode == 125
    assert result.stderr.startswith("pidns: error: creating a PID namespace failed")
    assert "CAP_SYS_ADMIN" in result.stderr and result.stderr.count("\n") == 1


def test_named_namespace_and_exec_as_nobody() -> None:
    name = f"nobody-{os.getpid()}"
    proc = subprocess.Popen(
        [*AS_NOBODY, *installed_for_users().argv("run", "--name", name,
         "--status-json", "-", "--", "sleep", "60")],
        stdout=subprocess.PIPE, text=True, env=nobody_env(), cwd="/",
    )  # fmt: skip
    try:
        assert proc.stdout is not None and '"start"' in proc.stdout.readline()
        result = nobody("exec", "--ns", name, "--", "ps", "-eo", "pid=,comm=")
        assert result.returncode == 0, result.stderr
        rows = [line.split() for line in result.stdout.splitlines()]
        assert rows[:2] == [["1", "pidns-init"], ["2", "sleep"]]
        listed = nobody("ls", "--json")
        assert name in listed.stdout
    finally:
        proc.kill()
        proc.wait(10)
    deadline = time.monotonic() + 10
    while nobody("exec", "--ns", name, "--", "true").returncode != 2:
        assert time.monotonic() < deadline, "the name still resolves after the namespace died"
