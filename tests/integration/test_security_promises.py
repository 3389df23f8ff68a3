"""SECURITY.md's promises about writes, foreign pid namespaces and the daemon's state, checked
against the kernel: a FUSE view refuses every write and changes nothing on the host; the daemon
refuses a mount made in another pid namespace and goes on serving its views; a daemon's state
directory and control socket admit only their user (and root)."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pidns.view import control
from pidns.view.api import open_view
from tests.soak.support import PIDNS, daemon_pid, namespace, pidns, private_daemon
from tests.users import NOBODY, installed_for_users

pytestmark = [pytest.mark.root, pytest.mark.fuse]

OTHER = NOBODY - 1  # a user that is neither the daemon's nor root

# Connects to a unix socket as whoever runs it; prints "connected" or the errno's name.
_CONNECT = """
import errno, socket, sys
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
    try:
        sock.connect(sys.argv[1])
    except OSError as err:
        print(errno.errorcode.get(err.errno, err.errno))
    else:
        print("connected")
"""

# What the write attempts write: none of it is what those files hold.
OOM, COMM, LAST_PID = b"789\n", b"pidns-wrote\n", b"31337\n"


def _as(uid: int, argv: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv],
        capture_output=True, text=True, timeout=60, env=env, cwd="/",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _connect_as(uid: int, sock: Path) -> str:
    return _as(uid, [installed_for_users().python, "-S", "-c", _CONNECT, str(sock)])


def _mount_of(path: Path) -> list[str] | None:
    """The mountinfo fields of the mount at path, if one is there."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4].replace("\\040", " ") == str(path):
                return fields
    return None


def _write(path: str, flags: int, data: bytes) -> None:
    fd = os.open(path, flags)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _attempts(view: str) -> list[tuple[str, Callable[[], object], int]]:
    """(what, how, the errno once the request reaches the adapter): EROFS for opens for writing
    (the adapter's own answer), ENOSYS for the operations it does not implement, EOPNOTSUPP for
    xattrs (the kernel's translation of a filesystem's ENOSYS to them)."""
    out: list[tuple[str, Callable[[], object], int]] = []
    for name, data in (
        ("1/oom_score_adj", OOM),
        ("1/comm", COMM),
        ("sys/kernel/ns_last_pid", LAST_PID),
    ):
        for flag_name, flag in (("O_WRONLY", os.O_WRONLY), ("O_RDWR", os.O_RDWR)):
            write = functools.partial(_write, f"{view}/{name}", flag, data)
            out.append((f"open {name} {flag_name}", write, errno.EROFS))
    comm = f"{view}/1/comm"
    create = functools.partial(_write, f"{view}/new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, COMM)
    out += [
        ("truncate 1/comm", lambda: os.truncate(comm, 0), errno.ENOSYS),
        ("create new", create, errno.ENOSYS),
        ("mkdir newdir", lambda: os.mkdir(f"{view}/newdir"), errno.ENOSYS),
        ("unlink 1/comm", lambda: os.unlink(comm), errno.ENOSYS),
        ("rename 1/comm", lambda: os.rename(comm, f"{view}/1/renamed"), errno.ENOSYS),
        ("chmod 1/comm", lambda: os.chmod(comm, 0o666), errno.ENOSYS),
        ("utime 1/comm", lambda: os.utime(comm, (1, 1)), errno.ENOSYS),
        ("setxattr 1/comm", lambda: os.setxattr(comm, "user.pidns", b"1"), errno.EOPNOTSUPP),
        ("symlink link", lambda: os.symlink("/etc", f"{view}/link"), errno.ENOSYS),
    ]
    return out


def _host_state(init: int) -> tuple[bytes, bytes]:
    """What the write attempts aim at in the init's entry, read from the kernel."""
    return (
        Path(f"/proc/{init}/oom_score_adj").read_bytes(),
        Path(f"/proc/{init}/comm").read_bytes(),
    )


def _ns_last_pid(init: int) -> int:
    """The namespace's ns_last_pid. The kernel answers it for the reader's pid namespace, so a
    task in there reads it: that task's own pid (nothing else forks in there)."""
    done = subprocess.run(
        ["nsenter", f"--pid=/proc/{init}/ns/pid", "--", "cat", "/proc/sys/kernel/ns_last_pid"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return int(done.stdout)


@pytest.mark.parametrize("superblock", ["ro", "rw"])
def test_fuse_view_refuses_every_write(tmp_path: Path, superblock: str) -> None:
    with private_daemon(tmp_path), namespace() as init:
        view = tmp_path / "view"
        view.mkdir()
        with open_view(f"@{init}", str(view), backend="fuse"):
            if superblock == "rw":
                # As mounted (MS_RDONLY) the VFS refuses every write before FUSE sees it; with
                # the superblock remounted rw the requests reach the adapter, which must refuse
                # them on its own. -i: no mount.fuse helper, only mount(2).
                done = subprocess.run(
                    ["mount", "-i", "-o", "remount,rw", str(view)], capture_output=True, text=True
                )
                assert done.returncode == 0, done.stderr
            fields = _mount_of(view)
            assert fields is not None and fields[-1].split(",")[0] == superblock, fields
            before, last_pid = _host_state(init), _ns_last_pid(init)
            assert before[0] != OOM and before[1] != COMM and last_pid < int(LAST_PID)
            listing, task = sorted(os.listdir(view)), sorted(os.listdir(view / "1"))

            seen, expected = {}, {}
            for what, attempt, reached in _attempts(str(view)):
                try:
                    attempt()
                    seen[what] = "succeeded"
                except OSError as err:
                    seen[what] = errno.errorcode.get(err.errno or 0, str(err.errno))
                expected[what] = errno.errorcode[errno.EROFS if superblock == "ro" else reached]
            assert seen == expected

            assert _host_state(init) == before
            assert _ns_last_pid(init) == last_pid + 1  # one fork since: the reader's
            assert sorted(os.listdir(view)) == listing and sorted(os.listdir(view / "1")) == task
            assert (view / "1" / "comm").read_bytes() == before[1]
            assert _mount_of(view) is not None  # still there, still answering
        assert _mount_of(view) is None


def test_daemon_refuses_a_mount_made_in_another_pid_namespace(tmp_path: Path) -> None:
    with private_daemon(tmp_path) as state, namespace() as init:
        served, refused = tmp_path / "served", tmp_path / "refused"
        served.mkdir()
        refused.mkdir()
        with open_view(f"@{init}", str(served), backend="fuse"):
            listing = sorted(os.listdir(served))
            assert "1" in listing
            daemon = daemon_pid()
            # nsenter --pid forks the command into the namespace's pid namespace; it keeps this
            # mount namespace (and the host's /proc, where @init resolves as it does here).
            done = subprocess.run(
                [
                    *("nsenter", f"--pid=/proc/{init}/ns/pid", "--"),
                    *(*PIDNS, "mount", f"@{init}", str(refused), "--backend", "fuse"),
                ],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 1, done.stderr
            assert done.stdout == ""
            assert done.stderr.splitlines() == [
                f"pidns: error: {refused}: the view daemon refused: "
                "the view daemon serves only mounts made in its own PID namespace"
            ]
            assert _mount_of(refused) is None
            assert daemon_pid() == daemon and os.path.exists(f"/proc/{daemon}")
            views = control.request(str(state / "daemon.sock"), {"op": "list"})["views"]
            assert [v["mountpoint"] for v in views] == [str(served)]
            assert sorted(os.listdir(served)) == listing
            assert (served / "1" / "comm").read_text() == "sh\n"

            # Control: the same mount made from the daemon's own pid namespace is served.
            done = pidns("mount", f"@{init}", str(refused), "--backend", "fuse")
            assert done.returncode == 0, done.stderr
            assert sorted(os.listdir(refused)) == listing
            assert pidns("umount", str(refused)).returncode == 0
            assert _mount_of(refused) is None


def _check_private(state: Path, owner: int, other: int) -> None:
    """state (the daemon's, its view mounted) is 0700 and its socket 0600, both owner's; other
    cannot connect, and each mode alone stops it."""
    for path, kind, mode in (
        (state, stat.S_ISDIR, 0o700),
        (state / "daemon.sock", stat.S_ISSOCK, 0o600),
    ):
        info = os.stat(path)
        assert kind(info.st_mode) and stat.S_IMODE(info.st_mode) == mode, (path, oct(info.st_mode))
        assert info.st_uid == owner, path
    sock = state / "daemon.sock"
    assert control.request(str(sock), {"op": "ping"})["ok"]  # root is let in, the socket answers
    assert _connect_as(other, sock) == "EACCES"
    try:
        os.chmod(state, 0o711)
        assert _connect_as(other, sock) == "EACCES"  # the socket's own mode
        # Control: with both opened, the same user does connect; the modes were what stopped it.
        os.chmod(sock, 0o666)
        assert _connect_as(other, sock) == "connected"
    finally:
        os.chmod(sock, 0o600)
        os.chmod(state, 0o700)


@contextlib.contextmanager
def _reachable_dir() -> Iterator[Path]:
    """A directory every user may traverse (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="pidns-security-"))
    os.chmod(path, 0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_roots_state_directory_and_socket_are_private() -> None:
    with _reachable_dir() as base, private_daemon(base, start=False) as state, namespace() as init:
        state.rmdir()  # PIDNS_STATE_DIR names it; the product creates it
        view = base / "view"
        view.mkdir()
        with open_view(f"@{init}", str(view), backend="fuse"):  # starts the daemon
            _check_private(state, 0, NOBODY)


# Before the first view, `pidns run --name` may have made the same directory (its registry
# keeps names in <state>/names): the state directory must be 0700 all the same.
@pytest.mark.parametrize("first", ["mount", "run --name"])
def test_a_users_default_state_directory_and_socket_are_private(
    home: Path, device_for_users: None, first: str
) -> None:
    os.chmod(home, 0o711)  # so that only the state directory stands between OTHER and the socket
    env = {k: v for k, v in os.environ.items() if k not in ("PIDNS_STATE_DIR", "XDG_RUNTIME_DIR")}
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(home))
    pidns_cli = installed_for_users().argv()
    state, view = home / "pidns", home / "view"
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    sleeper = subprocess.Popen([*as_nobody, "sleep", "300"])
    try:
        view.mkdir()
        os.chown(view, NOBODY, NOBODY)
        if first == "run --name":
            _as(NOBODY, [*pidns_cli, "run", "--name", "security-probe", "--", "true"], env)
            assert (state / "names").is_dir()
        # The user's view of its own (the host's) pid namespace, which starts the user's daemon.
        _as(NOBODY, [*pidns_cli, "mount", f"@{sleeper.pid}", str(view), "--backend", "fuse"], env)
        # Only the user enters its view (without allow_other the kernel refuses even root).
        assert "1" in _as(NOBODY, ["ls", str(view)], env).split()
        with pytest.raises(PermissionError):
            os.listdir(view)  # root too
        _check_private(state, NOBODY, OTHER)
    finally:
        if _mount_of(view) is not None:
            subprocess.run(["umount", "-l", str(view)], capture_output=True, check=False)
        with contextlib.suppress(OSError, ValueError):
            pid = int(json.loads((state / "daemon.pid").read_text())["pid"])
            if "pidns" in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGKILL)
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("planted", ["other user's", "symlink", "ours, too open"])
def test_a_state_directory_another_user_could_write_is_refused_or_repaired(
    home: Path, planted: str
) -> None:
    """/tmp/pidns-UID can be made by anyone before its user comes: a state directory that is
    another user's (or a symlink to one) is refused with one line and nothing is written there;
    one that is the user's own but open to others is made private again."""
    os.chmod(home, 0o755)
    state = home / "pidns"
    decoy = home / "decoy"
    if planted == "other user's":
        state.mkdir(mode=0o777)
        os.chmod(state, 0o777)
        os.chown(state, OTHER, OTHER)
    elif planted == "symlink":
        decoy.mkdir(mode=0o777)
        os.chmod(decoy, 0o777)
        os.chown(decoy, OTHER, OTHER)
        state.symlink_to(decoy)
    else:
        state.mkdir()
        os.chmod(state, 0o757)
        os.chown(state, NOBODY, NOBODY)
    env = {k: v for k, v in os.environ.items() if k not in ("PIDNS_STATE_DIR", "XDG_RUNTIME_DIR")}
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(home))
    done = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         *installed_for_users().argv(), "run", "--name", "probe", "--", "true"],
        capture_output=True, text=True, timeout=60, env=env, cwd="/",
    )  # fmt: skip
    if planted == "ours, too open":
        assert done.returncode == 0, done.stderr
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        return
    assert done.returncode == 125  # pidns failed before the command
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("pidns: error: ")
    assert f"{state} is not a private directory of this user" in done.stderr
    assert os.listdir(decoy if planted == "symlink" else state) == []  # nothing planted there
