"""pidns as an unprivileged user (uid 65534, no groups), each answer compared with the kernel's for
the same user: `ls`/`ps` degrade with a warning, `run` is rootless, `mount --backend fuse` serves
a namespace the user owns, and a root daemon's --allow-other view of root's tasks shows that user
exactly what a kernel procfs mounted with the same hidepid/gid options shows it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.users import NOBODY, installed_for_users

pytestmark = [pytest.mark.root, pytest.mark.fuse]  # root only to become the unprivileged user
EXEMPT_GID = 4242

# Run as the user: walks two views of one namespace and prints what differs, as JSON.
WALK = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
from tests.differential.harness import attempt, compare
fuse, kernel = sys.argv[2], sys.argv[3]

def guarded(view):
    out = {}
    for pid in sorted(n for n in os.listdir(view) if n.isdigit()):
        base = f"{view}/{pid}"
        out[pid] = {
            "lstat": attempt(lambda: (oct(os.lstat(base).st_mode), os.lstat(base).st_uid)),
            "environ": attempt(lambda: len(open(f"{base}/environ", "rb").read()) > 0),
            "io": attempt(lambda: open(f"{base}/io", "rb").read()[:6]),
            "fd": attempt(lambda: sorted(os.listdir(f"{base}/fd"))),
            "cwd": attempt(os.readlink, f"{base}/cwd"),
            "root": attempt(os.readlink, f"{base}/root"),
            "maps": attempt(lambda: len(open(f"{base}/maps", "rb").read()) > 0),
            "comm": attempt(lambda: open(f"{base}/comm", "rb").read().decode()),
        }
    return out

problems = compare(fuse, kernel, settle=0.15)
a, b = guarded(fuse), guarded(kernel)
problems += [f"/{p}: fuse {a.get(p)} kernel {b.get(p)}" for p in sorted(set(a) | set(b)) if a.get(p) != b.get(p)]
print(json.dumps({"problems": problems, "kernel_pids": sorted(b), "fuse_pids": sorted(a)}))
"""


def as_user(
    argv: list[str], home: Path, groups: str = "--clear-groups", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PIDNS_STATE_DIR", "XDG_RUNTIME_DIR")}
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(home))
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", groups, *argv],
        capture_output=True, text=True, timeout=timeout, env=env, cwd="/",
    )  # fmt: skip


def pidns_as_user(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return as_user(installed_for_users().argv(*args), home)


def test_ls_and_ps_degrade_and_match_what_the_user_sees(root_ns: int, home: Path) -> None:
    sleeper = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "sleep", "300"]
    )
    try:
        ps = pidns_as_user("ps", "--json", home=home)
        table = pidns_as_user("ps", "-o", "pid,ppid,user,comm", home=home)
        ls = pidns_as_user("ls", home=home)
        listed = {int(n) for n in os.listdir("/proc") if n.isdigit()}
    finally:
        sleeper.kill()
        sleeper.wait()
    for result in (ps, table, ls):
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
    # The ns/pid links of root's tasks in root's namespace need ptrace access: the text output
    # says what it could not read (JSON stays clean for programs).
    assert "pidns: warning: could not read:" in ls.stderr
    assert "pidns: warning: could not read:" in table.stderr
    rows = {r["pid"]: r for r in json.loads(ps.stdout)}
    mine = rows[sleeper.pid]  # the user's own task, numbered and parented as the kernel says
    assert mine["uid"] == NOBODY and mine["ppid"] == os.getpid() and mine["comm"] == "sleep"
    assert mine["ns"] == os.stat("/proc/self/ns/pid").st_ino
    # Everything listed is a task the kernel lists (tasks that exited meanwhile aside).
    assert set(rows) - listed <= {r for r in rows if not Path(f"/proc/{r}").exists()}
    assert os.getpid() in rows and 1 in rows and root_ns in rows
    assert rows[root_ns]["ns"] is None  # unknown to the user, not guessed


def test_run_rootless(home: Path) -> None:
    script = "test $$ = 1 -o $PPID = 1 && cat /proc/self/uid_map && ls /proc | grep -c '^[0-9]' && exit 7"
    result = pidns_as_user("run", "--", "sh", "-c", script, home=home)
    assert result.returncode == 7, result.stderr
    lines = result.stdout.split()
    assert lines[:3] == ["0", str(NOBODY), "1"]  # root in the namespace is the user outside
    assert 2 <= int(lines[3]) <= 4  # its own /proc: init, sh, ls, grep; no host task
    failed = pidns_as_user("run", "--", "/no/such/command", home=home)
    assert failed.returncode == 127
    assert "Traceback" not in failed.stderr


# Run as the user: its own namespace, mounted with the CLI, against that namespace's own procfs.
OWN_VIEW = r"""
import json, os, signal, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from tests.differential.harness import compare

def pidns(*args):
    # through /proc/self/exe: this interpreter's path may lead through a directory the user
    # cannot search (the one that started it could)
    return subprocess.run([sys.executable, "-m", "pidns.cli.main", *args], executable="/proc/self/exe",
                          capture_output=True, text=True, timeout=60)

ns = subprocess.Popen(["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc",
                       "sh", "-c", "sleep 1000 & sleep 1000 & wait"], stderr=subprocess.DEVNULL)
out = {}
init = 0
try:
    for _ in range(500):
        kids = open(f"/proc/{ns.pid}/task/{ns.pid}/children").read().split()
        if kids and len(open(f"/proc/{kids[0]}/task/{kids[0]}/children").read().split()) >= 2:
            init = int(kids[0])
            break
        time.sleep(0.01)
    view = os.environ["HOME"] + "/view"
    os.mkdir(view)
    mount = pidns("mount", f"@{init}", view, "--backend", "fuse")
    out["mount"] = [mount.returncode, mount.stdout, mount.stderr]
    if mount.returncode == 0:
        out["problems"] = compare(view, f"/proc/{init}/root/proc", settle=0.15)
        out["mounts"] = pidns("mounts", "--json").stdout
        umount = pidns("umount", view)
        out["umount"] = [umount.returncode, umount.stderr]
    out["left"] = view in open("/proc/self/mountinfo").read()
finally:
    if init:
        os.kill(init, signal.SIGKILL)  # the namespace dies with its init
    ns.kill()
    ns.wait()
print(json.dumps(out))
"""


def test_user_mounts_its_own_namespace_with_fuse(home: Path, device_for_users: None) -> None:
    install = installed_for_users()
    result = as_user([install.python, "-c", OWN_VIEW, install.tests_root], home)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["mount"][0] == 0, out["mount"]
    assert "(fuse, daemon " in out["mount"][1]
    assert out["problems"] == []
    views = json.loads(out["mounts"])
    assert [v["backend"] for v in views] == ["fuse"]
    assert out["umount"] == [0, ""]
    assert not out["left"]


@contextlib.contextmanager
def root_namespace() -> Iterator[int]:
    """Root's namespace with root's tasks, one task of the user and one of the exempt group."""
    script = (
        "sleep 1000 & "
        f"setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups sleep 1000 & "
        f"setpriv --reuid=4343 --regid={EXEMPT_GID} --clear-groups sleep 1000 & wait"
    )
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script])
    try:
        init = 0
        for _ in range(500):
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if (
                kids
                and len(Path(f"/proc/{kids[0]}/task/{kids[0]}/children").read_text().split()) >= 3
            ):
                init = int(kids[0])
                break
            time.sleep(0.01)
        assert init, "the namespace did not start"
        time.sleep(0.1)  # the setpriv children exec sleep
        yield init
    finally:
        proc.kill()
        with contextlib.suppress(OSError):
            for kid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
                os.kill(int(kid), 9)
        proc.wait()


@pytest.fixture(scope="module")
def root_ns() -> Iterator[int]:
    with root_namespace() as init:
        yield init


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory the user may search, for the mountpoints; root's daemon of this test apart
    from any other (its state directory inside stays root's)."""
    path = Path(tempfile.mkdtemp(prefix="pidns-views-"))
    os.chmod(path, 0o755)
    monkeypatch.setenv("PIDNS_STATE_DIR", str(path / "state"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(
    ("hidepid", "gid", "groups"),
    [
        ("off", None, "--clear-groups"),
        ("noaccess", None, "--clear-groups"),
        ("invisible", None, "--clear-groups"),
        ("ptraceable", None, "--clear-groups"),
        ("invisible", EXEMPT_GID, "--clear-groups"),
        ("invisible", EXEMPT_GID, f"--groups={EXEMPT_GID}"),
        ("noaccess", EXEMPT_GID, f"--groups={EXEMPT_GID}"),
    ],
)
def test_allow_other_view_of_roots_tasks(
    root_ns: int, state: Path, home: Path, hidepid: str, gid: int | None, groups: str
) -> None:
    from pidns.view.api import open_view

    fuse, kernel = state / "fuse", state / "kernel"
    fuse.mkdir()
    kernel.mkdir()
    options: dict[str, Any] = {"hidepid": hidepid, "gid": gid, "allow_other": True}
    with (
        open_view(f"@{root_ns}", str(fuse), backend="fuse", **options),
        open_view(f"@{root_ns}", str(kernel), backend="kernel", **options),
    ):
        install = installed_for_users()
        result = as_user(
            [install.python, "-c", WALK, install.tests_root, str(fuse), str(kernel)], home, groups
        )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["problems"] == []
    seen = len(out["kernel_pids"])
    if hidepid in ("off", "noaccess"):
        assert seen >= 4
    elif "--groups" in groups:
        assert seen >= 4  # the exempt group sees every task
    else:
        assert 1 <= seen < 4  # the user's own task at least, root's never
    assert not any(str(p) in Path("/proc/self/mountinfo").read_text() for p in (fuse, kernel))


def test_without_allow_other_the_user_cannot_enter(root_ns: int, state: Path, home: Path) -> None:
    from pidns.view.api import open_view

    fuse = state / "fuse"
    fuse.mkdir()
    with open_view(f"@{root_ns}", str(fuse), backend="fuse"):
        result = as_user(["ls", str(fuse)], home)
        mode = stat.S_IMODE(os.stat(fuse).st_mode)
    assert result.returncode != 0 and "Permission denied" in result.stderr
    assert mode  # root itself still enters
