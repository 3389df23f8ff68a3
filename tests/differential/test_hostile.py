"""Hostile names and offsets against the FUSE view, answered as the kernel's procfs answers them.

One namespace tree (threads, a zombie, a nested level) gets a FUSE view and a kernel view of its
outer level, and a second FUSE view of the nested level as a witness. Hypothesis throws names and
offsets at both views of the outer level: every lookup, readlink, read and readdir must give the
kernel's errno, or the kernel's content where the kernel's content is stable. Afterwards the daemon
must still run and every view must still answer.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.differential.harness import scenario

pytestmark = [pytest.mark.root, pytest.mark.fuse]

SPEC = {
    "levels": [
        {"sleepers": 2, "threads": 2, "zombie": True, "setsid": True, "exiter": None},
        {"sleepers": 1, "threads": 0, "zombie": False, "setsid": False, "exiter": None},
    ],
    "joined": False,
}
HOSTILE = [
    "..", ".", "0", "-1", "01", "001", "+1", " 1", "1 ", "1\n", "1\t", "0x1", "1e3", "1.0",
    str(2**31 - 1), str(2**31), str(2**32), str(2**32 + 1), str(2**63), str(2**64), "9" * 40,
    "4194304", "4194305", "\u0661", "\u00b2", "\U0001d7d9", "\u4e00", "é", "self",
    "thread-self", "task", "SELF",
    "self ", "a" * 255, "a" * 256, "é" * 128, "status", "stat", "children", "sched", "ns", "fd",
    "exe", "cwd", "root", "environ", "cmdline", "comm", "net", "mounts", "loadavg", "uptime",
    "sys", "locks", "kernel", "pid", "pid_max", "ns_last_pid", "..a", ".hidden", "*", "?",
    "%s", "\\", "'", '"',
]  # fmt: skip
# Top-level files a read of which blocks or is meaningless to compare (they change by the µs).
NEVER_OPEN = {b"kmsg", b"kcore", b"kpagecount", b"kpageflags", b"kpagecgroup", b"sysrq-trigger"}
OFFSETS = [0, 1, 2, 7, 100, 4095, 4096, 4097, 65536, 2**31, 2**32, 2**62, 2**63 - 1, -1, -(2**63)]
SIZES = [0, 1, 17, 4096, 131072]

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_GETDENTS64 = 217  # x86_64


def getdents(fd: int) -> list[tuple[int, bytes]]:
    """(d_off, name) from the directory's current position to its end."""
    out: list[tuple[int, bytes]] = []
    buf = ctypes.create_string_buffer(32768)
    while True:
        n = _libc.syscall(_SYS_GETDENTS64, fd, buf, len(buf))
        if n < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        if n == 0:
            return out
        raw = buf.raw[:n]
        pos = 0
        while pos < n:
            off = int.from_bytes(raw[pos + 8 : pos + 16], "little", signed=True)
            reclen = int.from_bytes(raw[pos + 16 : pos + 18], "little")
            name = raw[pos + 19 : pos + reclen].split(b"\0", 1)[0]
            out.append((off, name))
            pos += reclen


@dataclass
class Views:
    fuse: bytes
    kernel: bytes
    witness: bytes
    daemon: int
    bases: list[bytes]  # directories to throw names into, relative to a view


def answer(fn: Callable[[], Any]) -> Any:
    try:
        return ("ok", fn())
    except OSError as err:
        return ("errno", errno.errorcode.get(err.errno or 0, str(err.errno)))


def mode_of(path: bytes) -> Any:
    s = os.lstat(path)
    return (stat.S_IFMT(s.st_mode), stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid)


@pytest.fixture(scope="module")
def views() -> Iterator[Views]:
    from pidns.view.api import open_view

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="pidns-hostile-"))
        # A daemon of our own: what it runs is this tree's code, and its pid is ours to watch.
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.setenv("PIDNS_STATE_DIR", os.path.join(tmp, "state"))
        info = stack.enter_context(scenario(SPEC))
        outer, inner = (info["members"][ino] for ino in info["ns"])
        paths = {}
        for name, who, backend in (
            ("fuse", outer, "fuse"),
            ("kernel", outer, "kernel"),
            ("witness", inner, "fuse"),
        ):
            paths[name] = os.path.join(tmp, name)
            os.mkdir(paths[name])
            handle = stack.enter_context(open_view(f"@{who}", paths[name], backend=backend))
            if backend == "fuse":
                daemon = handle.daemon_pid
        kernel = paths["kernel"]
        pids = sorted((n for n in os.listdir(kernel) if n.isdigit()), key=int)
        bases = [b"", b"sys", b"sys/kernel"]
        for pid in pids:
            bases += [f"{pid}".encode(), f"{pid}/task".encode(), f"{pid}/ns".encode()]
            bases += [f"{pid}/fd".encode(), f"{pid}/fdinfo".encode()]
            for tid in os.listdir(f"{kernel}/{pid}/task"):
                bases.append(f"{pid}/task/{tid}".encode())
                if tid != pid:
                    bases.append(tid.encode())  # a non-leader, by lookup only
        assert daemon
        yield Views(
            os.fsencode(paths["fuse"]),
            os.fsencode(kernel),
            os.fsencode(paths["witness"]),
            daemon,
            bases,
        )


def names() -> st.SearchStrategy[bytes]:
    junk = st.binary(min_size=1, max_size=300).filter(lambda b: b"\0" not in b and b"/" not in b)
    text = st.text(min_size=1, max_size=200).filter(lambda s: "\0" not in s and "/" not in s)
    numbers = st.integers(-(2**70), 2**70).map(str)
    padded = st.tuples(st.integers(0, 9), st.integers(0, 2**23)).map(lambda t: f"{t[1]:0{t[0]}d}")
    return st.one_of(
        st.sampled_from(HOSTILE).map(os.fsencode),
        text.map(lambda s: s.encode("utf-8", "surrogatepass")),
        junk,
        numbers.map(str.encode),
        padded.map(str.encode),
    )


def lookup(view: bytes, rel: bytes) -> Any:
    """What lstat, and then readlink or listdir, answer for rel."""
    path = view + b"/" + rel
    first = answer(lambda: mode_of(path))
    if first[0] != "ok":
        return first
    kind = first[1][0]
    if kind == stat.S_IFLNK:
        return first, answer(lambda: os.readlink(path))
    if kind == stat.S_IFDIR:
        return first, answer(lambda: sorted(os.listdir(path)))
    return first, answer(lambda: read_at(path, 0, 0))


def read_at(path: bytes, offset: int, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def stable(fn: Callable[[bytes], Any], views: Views) -> tuple[Any, Any] | None:
    """(fuse, kernel) answers, or None when the kernel's answer moved while the FUSE view's was
    taken (counters, times): only then is a difference not the view's."""
    before = fn(views.kernel)
    fuse = fn(views.fuse)
    after = fn(views.kernel)
    return (fuse, after) if before == after else None


def joined(base: bytes, name: bytes) -> bytes:
    return base + b"/" + name if base else name


SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


@SETTINGS
@given(data=st.data(), name=names())
def test_lookup_of_hostile_names(views: Views, data: st.DataObject, name: bytes) -> None:
    base = data.draw(st.sampled_from(views.bases), label="base")
    if name in NEVER_OPEN:
        return
    got = stable(lambda v: lookup(v, joined(base, name)), views)
    if got is not None:
        fuse, kernel = got
        assert fuse == kernel, (base, name)


def existing_files(views: Views, base: bytes) -> list[bytes]:
    """Regular files of base the view serves as snapshots (not the ones it refuses by design)."""
    from pidns.view.nodes import UNSERVED

    out = []
    for name in sorted(os.listdir(views.kernel + b"/" + base if base else views.kernel)):
        if name in NEVER_OPEN or name.isdigit() or os.fsdecode(name) in UNSERVED:
            continue
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.lstat(views.kernel + b"/" + joined(base, name)).st_mode):
                out.append(name)
    return out


@SETTINGS
@given(
    data=st.data(),
    offset=st.one_of(st.sampled_from(OFFSETS), st.integers(-(2**63), 2**63 - 1)),
    size=st.sampled_from(SIZES),
)
def test_reads_at_hostile_offsets(
    views: Views, data: st.DataObject, offset: int, size: int
) -> None:
    base = data.draw(st.sampled_from([b for b in views.bases if not b.endswith(b"ns")]))
    files = existing_files(views, base)
    if not files:
        return
    name = data.draw(st.sampled_from(files), label="file")
    rel = joined(base, name)
    got = stable(lambda v: answer(lambda: read_at(v + b"/" + rel, offset, size)), views)
    if got is not None:
        fuse, kernel = got
        assert fuse == kernel, (rel, offset, size)


def dir_offsets(path: bytes, seek: int, whence: int) -> Any:
    """Entries read to the end, the offset each gives back, and what a re-read from a sought
    position answers: the lseek itself, then the names from there."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        entries = getdents(fd)
        resumed = []
        for i, (off, _name) in enumerate(entries):  # a telldir cookie resumes after its entry
            os.lseek(fd, off, os.SEEK_SET)
            resumed.append([n for _o, n in getdents(fd)] == [n for _o, n in entries[i + 1 :]])
        sought = answer(lambda: os.lseek(fd, seek, whence))
        after = answer(lambda: sorted(n for _o, n in getdents(fd)))
        return sorted(n for _o, n in entries), all(resumed), sought[0], after
    finally:
        os.close(fd)


@SETTINGS
@given(
    data=st.data(),
    seek=st.one_of(st.sampled_from(OFFSETS), st.integers(-(2**63), 2**63 - 1)),
    whence=st.sampled_from([os.SEEK_SET, os.SEEK_CUR]),
)
def test_readdir_at_hostile_offsets(
    views: Views, data: st.DataObject, seek: int, whence: int
) -> None:
    base = data.draw(st.sampled_from([b for b in views.bases if b.count(b"/") < 3]))
    fuse = dir_offsets(views.fuse + b"/" + base, seek, whence)
    kernel = dir_offsets(views.kernel + b"/" + base, seek, whence)
    assert fuse[1] and kernel[1], "a telldir offset does not resume after its entry"
    if fuse[0] != kernel[0]:  # a listing that moved (fd/ of a walker): not the view's
        return
    # Offsets are opaque cookies, so only what they lead to is compared. Negative positions are
    # EINVAL in both. procfs caps positions at 2**31 - 1 (its s_maxbytes is MAX_NON_LFS); a FUSE
    # directory's lseek never reaches the daemon and allows up to 2**63 - 1: past the cap the
    # kernel says EINVAL and the view lists nothing. The full listing from 0 must match.
    fuse_seek, kernel_seek = fuse[2], kernel[2]
    if whence == os.SEEK_SET and seek > 2**31 - 1:
        assert kernel_seek == "errno" and fuse_seek == "ok", (base, seek)
        assert fuse[3] == ("ok", []), (base, seek)
    elif whence == os.SEEK_SET:
        assert fuse_seek == kernel_seek, (base, seek, whence)
    if seek == 0:
        assert fuse[3] == kernel[3], base


def test_offset_files_are_refused_not_snapshotted(views: Views) -> None:
    """mem and pagemap are served by offset (pagemap spans the address space): the view refuses
    them (EPERM) rather than read them whole, and stays responsive."""
    pid = next(b for b in views.bases if b.isdigit())
    for name in (b"mem", b"pagemap"):
        fuse, kernel = (view + b"/" + pid + b"/" + name for view in (views.fuse, views.kernel))
        with pytest.raises(PermissionError):
            read_at(fuse, 0, 8)
        assert mode_of(fuse) == mode_of(kernel)


def test_views_survive_the_fuzzing(views: Views) -> None:
    """Runs after the fuzzers (file order): the daemon is alive and every view still answers."""
    os.kill(views.daemon, 0)
    for view in (views.fuse, views.witness):
        listing = os.listdir(view)
        pids = [n for n in listing if n.isdigit()]
        assert b"self" in listing and pids
        assert os.path.getsize(view + b"/" + pids[0] + b"/status") == 0  # direct_io: size 0
        status = read_at(view + b"/" + pids[0] + b"/status", 0, 4096)
        assert status.startswith(b"Name:")
    assert sorted(os.listdir(views.fuse)) == sorted(os.listdir(views.kernel))
