"""Every CLI command with bad input: one line on stderr starting `pidns: error:` and naming the
input, exit 2 (usage), 1 (runtime) or 125 (run/exec before the command), no traceback, and nothing
left behind: no new mount, no process (the CLI's children carry a marker in their environment), no
daemon serving a view that failed.

The commands come from the command table, so a new command without cases fails the walk."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pidns.cli.commands import COMMANDS
from tests.users import NOBODY, installed_for_users

pytestmark = [pytest.mark.root, pytest.mark.fuse]
MARK = "PIDNS_BAD_INPUT_MARK"


@dataclass
class Env:
    tmp: Path  # searchable by the user
    sleeper: int  # a live task of root's (its namespace: the host's)
    dir: Path  # an empty directory
    file: Path  # a regular file
    user_dir: Path  # an empty directory the user owns
    user_ro: Path  # a directory the user owns on a read-only tmpfs


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    tmp = Path(tempfile.mkdtemp(prefix="pidns-bad-"))
    os.chmod(tmp, 0o755)
    sleeper = subprocess.Popen(["sleep", "600"])
    ro = tmp / "ro"
    ro.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(ro)], check=True)
        (ro / "mp").mkdir()
        os.chown(ro / "mp", NOBODY, NOBODY)
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        for name in ("dir", "user"):
            (tmp / name).mkdir()
        os.chown(tmp / "user", NOBODY, NOBODY)
        (tmp / "file").write_text("")
        yield Env(tmp, sleeper.pid, tmp / "dir", tmp / "file", tmp / "user", ro / "mp")
    finally:
        sleeper.kill()
        sleeper.wait()
        subprocess.run(["umount", "-l", str(ro)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Case:
    args: list[str]
    code: int
    named: str  # what stderr must mention
    user: bool = False  # run as uid 65534
    wrap: list[str] | None = None  # run inside this (a private mount namespace)


def cases(e: Env) -> dict[str, list[Case]]:
    s, d = f"@{e.sleeper}", str(e.dir)
    no_fuse = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
    return {
        "ls": [
            Case(["ls", "--proc", str(e.file)], 2, str(e.file)),
            Case(["ls", "--flat", "extra"], 2, "extra"),
        ],
        "ps": [
            Case(["ps", "--ns", "pid:[777]"], 2, "pid:[777]"),
            Case(["ps", "-o", "pid,bogus"], 2, "bogus"),
            Case(["ps", "--ns", "01x"], 2, "01x"),
        ],
        "translate": [
            Case(["translate", "0", "--to", "host"], 2, "0"),
            Case(["translate", "1", "--to", "nosuch"], 2, "nosuch"),
            Case(["translate", "999999", "--from", "host", "--to", "host"], 1, "999999"),
            Case(["translate", "x", "--to", "host"], 2, "'x'"),
            Case(["translate", "1", "--to", "host", "--field", "2"], 2, "--field"),
            Case(["translate", "1", "--to", "podman:pidns-no-such"], 2, "podman:pidns-no-such"),
            Case(["translate", "1", "--to", "k8s:a/b/c/d"], 2, "k8s:a/b/c/d"),
            Case(["translate", "1", "--to", "cgroup:relative"], 2, "cgroup:relative"),
        ],
        "which": [
            Case(["which"], 2, "PID"),
            Case(["which", "0"], 2, "0"),
            Case(["which", "999999"], 1, "999999"),
        ],
        "run": [
            Case(["run", "--nest", "0", "--", "true"], 2, "--nest"),
            Case(["run", "--bogus", "--", "true"], 2, "--bogus"),
            Case(["run"], 2, "no command"),
            Case(["run", "--name", "a/b", "--", "true"], 2, "a/b"),
            Case(["run", "--no-user", "--", "true"], 125, "CAP_SYS_ADMIN", user=True),
            Case(["run", "--nest", "40", "--", "true"], 125, "level 32", user=True),
            Case(["run", "--memory", "12Q", "--", "true"], 2, "--memory 12Q"),
            Case(["run", "--cpus", "0", "--", "true"], 2, "--cpus 0"),
            Case(["run", "--cpuset", "99", "--", "true"], 2, "--cpuset 99"),
            Case(["run", "--pids-max", "x", "--", "true"], 2, "--pids-max x"),
            Case(
                ["run", "--memory", "64M", "--", "true"], 125, "cannot create a cgroup", user=True
            ),
        ],
        "exec": [
            Case(["exec", "--ns", "pid:[777]", "--", "true"], 2, "pid:[777]"),
            Case(["exec", "--ns", "host"], 2, "no command"),
            Case(["exec", "--bogus"], 2, "--bogus"),
            Case(["exec", "--ns", "host", "--cpus-from-quota", "--", "true"], 2, "--virtualize"),
            Case(["exec", "--ns", "host", "--virtualize", "--", "true"], 2, "cgroup of its own"),
            Case(
                ["exec", "--ns", "host", "--backend", "kernel", "--virtualize", "--", "true"],
                2,
                "cgroup of its own",
            ),
        ],
        "daemon": [
            Case(["daemon"], 2, "status or restart"),
            Case(["daemon", "bogus"], 2, "bogus"),
            Case(["daemon", "status", "--bogus"], 2, "--bogus"),
        ],
        "export": [
            Case(
                ["export", "--proc", str(e.file), "--once", "--textfile", "/tmp/x.prom"],
                2,
                str(e.file),
            ),
            Case(["export", "--listen", "nonsense"], 2, "nonsense"),
            Case(["export", "--once"], 2, "--textfile"),
            Case(["export", "--textfile", f"{d}/x.txt"], 2, ".prom"),
            Case(["export", "--min-interval", "-1"], 2, "--min-interval"),
        ],
        "lxcfs": [
            Case(["lxcfs"], 2, "MOUNTPOINT"),
            Case(["lxcfs", "/no/such/dir"], 2, "/no/such/dir"),
            Case(["lxcfs", str(e.file)], 2, str(e.file)),
            Case(["lxcfs", "/"], 1, "/"),  # busy: something is mounted there
        ],
        "mount": [
            Case(["mount", "pid:[777]", d], 2, "pid:[777]"),
            Case(["mount", s, "/no/such/dir"], 2, "/no/such/dir"),
            Case(["mount", s, str(e.file)], 2, str(e.file)),
            Case(["mount", s, d, "--backend", "bogus"], 2, "bogus"),
            Case(["mount", s, d, "--hidepid", "7"], 2, "7"),
            Case(["mount", s, d, "--gid", "x"], 2, "x"),
            Case(["mount", s, d, "--backend", "kernel", "--virtualize"], 2, "cgroup of its own"),
            Case(["mount", s, d, "--cpus-from-quota"], 2, "--virtualize"),
            Case(["mount", "host", d, "--virtualize"], 2, "cgroup of its own"),
            Case(["mount", s, "/"], 1, "/"),  # busy: something is mounted there
            Case(["mount", "@1", str(e.user_dir), "--backend", "fuse"], 1, "@1", user=True),
            Case(["mount", s, str(e.user_dir), "--backend", "kernel"], 1, s, user=True),
            # no usable /dev/fuse, without touching the host's device
            Case(
                ["mount", s, d, "--backend", "fuse"],
                1,
                d,
                wrap=[*no_fuse, f'mount --bind {e.file} /dev/fuse && exec "$@"', "-"],
            ),
            Case(
                ["mount", s, d, "--backend", "fuse"],
                1,
                "/dev/fuse",
                wrap=[*no_fuse, 'mount -t tmpfs tmpfs /dev && exec "$@"', "-"],
            ),
            # the user may not mount on a directory it cannot write (fusermount3's rule)
            Case(
                ["mount", "@" + "{user_task}", str(e.user_ro), "--backend", "fuse"],
                1,
                str(e.user_ro),
                user=True,
            ),
        ],
        "umount": [
            Case(["umount", "/no/such/dir"], 2, "/no/such/dir"),
            Case(["umount", "/"], 2, "/"),
            Case(["umount", d], 2, d),
        ],
        "mounts": [
            Case(["mounts", "extra"], 2, "extra"),
            Case(["mounts", "--bogus"], 2, "--bogus"),
        ],
        "demo": [
            Case(["demo", "--nest", "0"], 2, "--nest"),
            Case(["demo", "--nest", "99"], 2, "--nest"),
        ],
    }


def mount_lines() -> set[str]:
    return {
        " ".join(line.split()[3:5])
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
    }


def left_mounts(before: set[str], case: Case, e: Env) -> set[str]:
    """New mounts the case could have made: under the test's directory or at a path it named
    (other tests running meanwhile mount elsewhere)."""
    named = {os.path.normpath(a) for a in case.args if a.startswith("/")}
    tmp = str(e.tmp)
    return {
        line
        for line in mount_lines() - before
        if (point := line.split(" ", 1)[1]) in named or point == tmp or point.startswith(tmp + "/")
    }


def marked(mark: str) -> list[int]:
    out = []
    needle = f"{MARK}={mark}".encode()
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                if needle in Path(f"/proc/{name}/environ").read_bytes():
                    out.append(int(name))
    return out


def settled(mark: str, timeout: float = 1.0) -> list[int]:
    """Marked processes still there a moment later (a failed command starts no daemon)."""
    deadline = time.monotonic() + timeout
    while (left := marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@contextlib.contextmanager
def user_task() -> Iterator[int]:
    proc = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "sleep", "600"]
    )
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def run(case: Case, e: Env, mark: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    environ[MARK] = mark
    environ["PIDNS_STATE_DIR"] = str(e.tmp / f"state-{mark}")
    argv = [sys.executable, "-m", "pidns.cli.main", *case.args]
    if case.user:
        environ.pop("PIDNS_STATE_DIR")
        environ.update(HOME=str(e.user_dir), XDG_RUNTIME_DIR=str(e.user_dir))
        argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                *installed_for_users().argv(*case.args)]  # fmt: skip
    if case.wrap:
        argv = [*case.wrap, *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=environ, cwd="/")


def test_every_command_has_cases(env: Env) -> None:
    table = cases(env)
    assert set(table) == set(COMMANDS), "a command without bad-input cases"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_bad_input(env: Env, command: str, device_for_users: None) -> None:
    table = cases(env)
    wrong = Case([command, "--no-such-option"], 2, "--no-such-option")
    failures = []
    with user_task() as mine:
        for case in [*table.get(command, []), wrong]:
            case.args = [a.replace("{user_task}", str(mine)) for a in case.args]
            mark = uuid.uuid4().hex
            before = mount_lines()
            result = run(case, env, mark)
            lines = result.stderr.splitlines()
            problems = []
            if result.returncode != case.code:
                problems.append(f"exit {result.returncode}, expected {case.code}")
            if len(lines) != 1 or not lines[0].startswith("pidns: error: "):
                problems.append("not one 'pidns: error:' line")
            if case.named not in result.stderr:
                problems.append(f"does not name {case.named!r}")
            if "Traceback" in result.stderr:
                problems.append("traceback")
            if mounts := left_mounts(before, case, env):
                problems.append(f"left mounts {mounts}")
            if left := settled(mark):
                problems.append(f"left processes {left}")
            if problems:
                failures.append(f"{case.args}: {'; '.join(problems)}: {result.stderr!r}")
    assert not failures, "\n".join(failures)


def test_root_may_mount_over_a_read_only_directory(env: Env) -> None:
    """Not an error: mounting over a directory does not write to it (the kernel agrees); the view
    answers and unmounts cleanly."""
    mark = uuid.uuid4().hex
    mounted = run(
        Case(["mount", f"@{env.sleeper}", str(env.user_ro), "--backend", "fuse"], 0, ""), env, mark
    )
    try:
        assert mounted.returncode == 0, mounted.stderr
        assert str(env.sleeper) in os.listdir(env.user_ro)
    finally:
        unmounted = run(Case(["umount", str(env.user_ro)], 0, ""), env, mark)
    assert unmounted.returncode == 0, unmounted.stderr
    assert str(env.user_ro) not in Path("/proc/self/mountinfo").read_text().split()
    assert not settled(mark, timeout=8.0)  # the daemon leaves a moment after its last view


def test_exec_without_privilege_fails_before_the_command(env: Env) -> None:
    result = run(Case(["exec", "--ns", "@1", "--", "true"], 125, "@1", user=True), env, "x")
    assert result.stderr.startswith("pidns: error: ") and "@1" in result.stderr
    assert result.returncode == 125, result.stderr
