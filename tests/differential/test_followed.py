"""What a view shows where FUSE differs most from procfs, against the kernel's procfs of the same
namespace: following ns/ and fd/ links (docs/kernel-proc.md §17b), a task reading itself (§12b),
and the same walks with passthrough off (reads by direct I/O)."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat as st
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.differential.harness import compare, scenario
from tests.differential.test_views import views

pytestmark = [pytest.mark.root, pytest.mark.fuse]

# pid 1 of its own namespace, holding a pipe, a socket pair and an eventfd until stdin closes
HOLDER = (
    "import os, socket, sys; r, w = os.pipe(); a, b = socket.socketpair(); e = os.eventfd(0); "
    "print('ready', flush=True); sys.stdin.read()"
)
NS_COLUMNS = "pid,pidns,mntns,netns,ipcns,utsns,userns,cgroupns,timens,comm"


@contextlib.contextmanager
def holder() -> Iterator[int]:
    """The host pid of the holder, init of a new pid namespace."""
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", sys.executable, "-c", HOLDER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def followed(path: str) -> tuple[int, int, int, int, int, int, int]:
    s = os.stat(path)
    return (s.st_ino, st.S_IFMT(s.st_mode), st.S_IMODE(s.st_mode), s.st_uid, s.st_gid,
            s.st_nlink, s.st_size)  # fmt: skip


def inside(host_pid: int, backend: str, *cmd: str) -> str:
    pidns = shutil.which("pidns") or str(Path(sys.executable).with_name("pidns"))
    return subprocess.run(
        [pidns, "exec", "--ns", f"@{host_pid}", "--backend", backend, "--", *cmd],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


def lsof_fds(host_pid: int, backend: str) -> dict[str, tuple[str, str]]:
    """fd -> (TYPE, NODE) as lsof shows pid 1's descriptors from inside, through that backend."""
    out = inside(host_pid, backend, "lsof", "-w", "-a", "-p", "1", "-d", "0-99", "-F", "fti")
    fds: dict[str, tuple[str, str]] = {}
    fd = ""
    for line in out.splitlines():
        if line[:1] == "f":
            fd = line[1:]
            fds[fd] = ("", "")
        elif line[:1] == "t" and fd:
            fds[fd] = (line[1:], fds[fd][1])
        elif line[:1] == "i" and fd:
            fds[fd] = (fds[fd][0], line[1:])
    return fds


def test_following_ns_links_reaches_the_namespace_inode_as_the_kernel_shows() -> None:
    with holder() as host, views(host) as (fuse, kernel):
        names = sorted(os.listdir(f"{kernel}/1/ns"))
        assert sorted(os.listdir(f"{fuse}/1/ns")) == names
        for name in names:
            link = f"1/ns/{name}"
            assert os.readlink(f"{fuse}/{link}") == os.readlink(f"{kernel}/{link}")
            assert followed(f"{fuse}/{link}") == followed(f"{kernel}/{link}"), name
            assert st.S_ISLNK(os.lstat(f"{fuse}/{link}").st_mode)
        # `ps` reads a namespace column as the inode of the followed link: never "-"
        rows = {
            backend: [
                line for line in inside(host, backend, "ps", "-e", "-o", NS_COLUMNS).splitlines()
                if not line.rstrip().endswith(" ps")
            ]
            for backend in ("fuse", "kernel")
        }  # fmt: skip
        assert rows["fuse"] == rows["kernel"] and len(rows["kernel"]) == 2
        assert "-" not in rows["fuse"][1].split()


def test_following_fd_links_reaches_pipes_sockets_and_anonymous_inodes() -> None:
    with holder() as host, views(host) as (fuse, kernel):
        fds = sorted(os.listdir(f"{kernel}/1/fd"), key=int)
        assert sorted(os.listdir(f"{fuse}/1/fd"), key=int) == fds
        kinds = set()
        for fd in fds:
            link = f"1/fd/{fd}"
            target = os.readlink(f"{kernel}/{link}")
            assert os.readlink(f"{fuse}/{link}") == target
            if target.startswith("/"):
                continue  # an absolute target is the reader's own path walk, not the view's
            ours, theirs = followed(f"{fuse}/{link}"), followed(f"{kernel}/{link}")
            kind = target.split(":", 1)[0]
            kinds.add(kind)
            if kind == "anon_inode":  # typeless in the kernel; FUSE must give a type: regular
                assert theirs[1] == 0 and ours[1] == st.S_IFREG
                theirs = (theirs[0], st.S_IFREG, *theirs[2:])
            assert ours == theirs, target
        assert {"pipe", "socket", "anon_inode"} <= kinds
        if shutil.which("lsof"):
            # lsof's FD, TYPE and NODE columns; DEVICE is the view's own (FUSE has no other), and
            # an anonymous inode is REG through the view where the kernel's is typeless (a_inode)
            rows = {backend: lsof_fds(host, backend) for backend in ("fuse", "kernel")}
            assert list(rows["fuse"]) == list(rows["kernel"])
            for fd, (kind, node) in rows["kernel"].items():
                if os.readlink(f"{kernel}/1/fd/{fd}").startswith("/"):
                    continue
                assert rows["fuse"][fd] == ("REG" if kind == "a_inode" else kind, node), fd
            assert {"FIFO", "unix"} <= {kind for kind, _ in rows["fuse"].values()}


def test_a_task_reading_itself_is_running_and_others_are_not() -> None:
    script = (
        "grep State /proc/self/status; cut -d' ' -f3 /proc/self/stat; "
        "cut -d' ' -f3 /proc/thread-self/stat; grep State /proc/1/status"
    )
    with holder() as host:
        fuse = inside(host, "fuse", "sh", "-c", script)
        kernel = inside(host, "kernel", "sh", "-c", script)
    assert fuse == kernel
    assert fuse.splitlines()[:3] == ["State:\tR (running)", "R", "R"]
    assert fuse.splitlines()[3] == "State:\tS (sleeping)"


@pytest.fixture
def direct_io_daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A daemon of its own that never negotiates passthrough (as one without the privilege)."""
    with tempfile.TemporaryDirectory() as state:
        monkeypatch.setenv("PIDNS_STATE_DIR", state)
        monkeypatch.setenv("PIDNS_FUSE_PASSTHROUGH", "0")
        yield


def _fuse_stats(mountpoint: str) -> dict[str, object]:
    from pidns.view.api import list_views

    [view] = [v for v in list_views() if v.get("mountpoint") == mountpoint]
    fuse: dict[str, object] = view["fuse"]
    return fuse


@pytest.mark.parametrize("passthrough", [True, False])
def test_a_view_matches_the_kernel_with_and_without_passthrough(
    passthrough: bool, request: pytest.FixtureRequest
) -> None:
    if not passthrough:
        request.getfixturevalue("direct_io_daemon")
    spec = {"levels": [{"sleepers": 2, "threads": 1, "zombie": True, "setsid": True,
                        "exiter": None}], "joined": False}  # fmt: skip
    with scenario(spec) as info:
        member = info["members"][info["ns"][0]]
        with views(member) as (fuse, kernel):
            problems = compare(fuse, kernel, settle=0.15)
            stats = _fuse_stats(fuse)
    assert not problems, "\n".join(problems)
    requests, pt = stats["requests"], stats["passthrough"]
    assert isinstance(requests, dict) and isinstance(pt, dict)
    assert requests["OPEN"] > 10
    if passthrough:  # root: the kernel serves every read from the snapshots
        assert pt["negotiated"] and pt["enabled"] and pt["opens"] == requests["OPEN"]
        assert "READ" not in requests
    else:
        assert not pt["negotiated"] and requests["READ"] >= requests["OPEN"]
