"""Race-tolerant reading of one /proc tree, bound to a directory fd.

Each task is read through an fd of its own /proc/PID directory: that fd pins the task, so files read
through it all describe the same process even if its pid is reused meanwhile (they give ESRCH instead).
A task that vanishes mid-read is skipped, never an error.
"""

from __future__ import annotations

import errno
import os

# threading.local itself, without the threading module (ps --json would import it for this)
from _thread import _local

from pidns.errors import UsageError
from pidns.ids import HostPid
from pidns.model import Task
from pidns.procfs.parse import (
    parse_cmdline,
    parse_ns_link,
    parse_stat,
    parse_status,
    stat_fields,
)

_GONE = (errno.ENOENT, errno.ESRCH)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_CLOEXEC


class Vanished(Exception):
    """The task exited while being read."""


def read_at(dir_fd: int, name: str) -> bytes:
    """Read a whole /proc file relative to dir_fd (one the kernel renders as a sequence: a read
    shorter than asked is its end)."""
    fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    try:
        return read_all(fd, short_read_ends=True)
    finally:
        os.close(fd)


def read_short_at(dir_fd: int, name: str, buffer: tuple[tuple[bytearray], memoryview]) -> bytes:
    """read_at through `buffer` (this thread's, from _buffer()), for the files of a task that
    are almost always shorter than a chunk: one open, one read, one close."""
    fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    try:
        n = os.readv(fd, buffer[0])
        data = buffer[1][:n].tobytes()
        if n < CHUNK:
            return data
        return data + read_all(fd, short_read_ends=True)
    finally:
        os.close(fd)


def read_all(fd: int, *, limit: int = 0, short_read_ends: bool = False) -> bytes:
    """fd's content to its end; EFBIG past `limit` bytes (0: no limit).

    Read through a buffer this thread keeps, each chunk copied out at its exact size: reading
    with os.read allocates the full size asked and shrinks it, and a long-running reader (the
    view daemon) fragments its heap with those blocks until its memory only grows."""
    buffers, view = _buffer()
    chunks = []
    total = 0
    while n := os.readv(fd, buffers):
        total += n
        if limit and total > limit:
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
        chunks.append(view[:n].tobytes())
        if short_read_ends and n < CHUNK:
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def pread_all(fd: int) -> bytes:
    """A sequence file's content from its start: read_all at offset 0, whatever was read before
    (a proc or cgroup file renders afresh when read from 0)."""
    buffers, view = _buffer()
    chunks = []
    offset = 0
    while n := os.preadv(fd, buffers, offset):
        offset += n
        chunks.append(view[:n].tobytes())
        if n < CHUNK:
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


CHUNK = 16384  # most proc files fit: one read
_thread_buffers = _local()


def _buffer() -> tuple[tuple[bytearray], memoryview]:
    """This thread's buffer: as readv takes it, and as a view to copy from."""
    try:
        mine: tuple[tuple[bytearray], memoryview] = _thread_buffers.buffer
    except AttributeError:
        buffer = bytearray(CHUNK)
        mine = _thread_buffers.buffer = ((buffer,), memoryview(buffer))
    return mine


class ProcReader:
    """Reads tasks from the proc tree at `path` (the host's /proc, or any procfs mount).

    `brief`: read a task's `status` only when its pid chain is more than the tree's own number.
    A task whose ns/pid link names the tree's own namespace is at level 0, where `stat` has every
    number `status` would give (NSpid is its pid, NSpgid its pgrp, ...) and the directory's owner
    is the effective uid and gid (the kernel owns a /proc/PID directory by them even for a
    non-dumpable task); what only `status` has (all four uids and gids, TracerPid) is left None.
    `cmdlines=False`: tasks come with an empty cmdline (a third fewer reads).
    """

    def __init__(self, path: str = "/proc", brief: bool = False, cmdlines: bool = True) -> None:
        self.path = path
        self.brief = brief
        self.cmdlines = cmdlines
        try:
            self.fd = os.open(path, _DIR_FLAGS)
        except OSError as err:
            raise UsageError(f"{path}: cannot read it as a proc tree ({err.strerror})") from None
        self.root_ino: int | None = None  # the namespace owning this tree, once a link told it
        self._links: dict[str, int] = {}  # ns/pid link text -> inode, parsed once each

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> ProcReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pids(self) -> list[HostPid]:
        """The pid directories readdir lists (thread-group leaders), in readdir order."""
        return [HostPid(int(n)) for n in os.listdir(self.fd) if n.isdigit()]

    def task(self, pid: int, threads: bool = False) -> Task | None:
        """Read one task by pid, or None when it is gone (or was never there)."""
        try:
            dir_fd = os.open(str(pid), _DIR_FLAGS, dir_fd=self.fd)
        except OSError as err:
            if err.errno in _GONE:
                return None
            raise
        try:
            return self._read(dir_fd, threads)
        except Vanished:
            return None
        finally:
            os.close(dir_fd)

    def cmdline(self, pid: int) -> list[str]:
        """One task's argv; empty when it is gone or has none."""
        try:
            return parse_cmdline(read_at(self.fd, f"{pid}/cmdline"))
        except (OSError, ValueError):
            return []

    def tasks(self, threads: bool = False) -> list[Task]:
        """Every task readdir lists (a task that vanishes meanwhile is left out).

        One thread on purpose: reading half the tree in a forked copy or in threads measured no
        faster here, as the kernel's side of reading /proc does not scale with readers."""
        return self._read_all(self.pids(), threads)

    def _read_all(self, pids: list[HostPid], threads: bool) -> list[Task]:
        found = []
        for pid in pids:
            task = self.task(pid, threads)
            if task is not None:
                found.append(task)
        return found

    def _read(self, dir_fd: int, threads: bool, ns_ino: int | None = None, tgid: int = 0) -> Task:
        looked = False  # whether ns_ino is what the link said (None: unreadable)
        if self.brief and self.root_ino is not None:
            if ns_ino is None:
                ns_ino, looked = self._ns_ino(dir_fd), True
            if ns_ino == self.root_ino:
                task = self._read_brief(dir_fd, ns_ino, tgid)
                if threads:
                    task.threads = self._threads(dir_fd, task)
                return task
        try:
            status = parse_status(read_at(dir_fd, "status"))
            stat = parse_stat(read_at(dir_fd, "stat"))
            cmdline = parse_cmdline(read_at(dir_fd, "cmdline")) if self.cmdlines else []
        except OSError as err:
            if err.errno in _GONE:
                raise Vanished from None
            raise
        except ValueError:  # a file cut short as the task died
            raise Vanished from None
        if ns_ino is None:
            # Every level-0 task lives in the tree's own namespace: one readable link tells it.
            if len(status.nspid) == 1 and self.root_ino is not None:
                ns_ino = self.root_ino
            elif not looked:
                ns_ino = self._ns_ino(dir_fd)
                if len(status.nspid) == 1:
                    self.root_ino = ns_ino
        task = Task(
            host_pid=HostPid(status.pid),
            tgid=HostPid(status.tgid),
            ppid=HostPid(status.ppid),
            tracer_pid=HostPid(status.tracer_pid),
            nstgid=status.nstgid,
            nspid=status.nspid,
            nspgid=status.nspgid,
            nssid=status.nssid,
            uids=status.uid,
            gids=status.gid,
            euid=status.uid[1],
            egid=status.gid[1],
            state=status.state,
            comm=stat.comm,
            cmdline=cmdline,
            start_time=stat.start_time,
            tty_nr=stat.tty_nr,
            tpgid=stat.tpgid,
            num_threads=stat.num_threads,
            ns_ino=ns_ino,
        )
        if threads:
            task.threads = self._threads(dir_fd, task)
        return task

    def _read_brief(self, dir_fd: int, ns_ino: int, tgid: int) -> Task:
        """A task of the tree's own namespace (level 0) from `stat` and its directory's owner.
        `tgid` is the leader's pid, for a thread. (Most tasks are read here: kept lean.)"""
        buffer = _buffer()
        try:
            owner = os.fstat(dir_fd)
            pid, comm, state, ppid, pgrp, session, tty_nr, tpgid, num_threads, start_time = (
                stat_fields(read_short_at(dir_fd, "stat", buffer))
            )
            cmdline = parse_cmdline(read_short_at(dir_fd, "cmdline", buffer))
        except OSError as err:
            if err.errno in _GONE:
                raise Vanished from None
            raise
        except ValueError:  # a file cut short as the task died
            raise Vanished from None
        tgid = tgid or pid
        nspid = (pid,)
        nstgid = nspid if tgid == pid else (tgid,)
        # Positional, in Task's order: a call with 20 keywords takes three times as long.
        return Task(
            HostPid(pid),
            HostPid(tgid),
            HostPid(ppid),
            None,  # tracer_pid: only status has it, and uids and gids
            nstgid,
            nspid,
            (pgrp,),
            (session,),
            None,
            None,
            owner.st_uid,
            owner.st_gid,
            state,
            comm,
            cmdline,
            start_time,
            tty_nr,
            tpgid,
            num_threads,
            ns_ino,
        )

    def _ns_ino(self, dir_fd: int) -> int | None:
        try:
            link = os.readlink("ns/pid", dir_fd=dir_fd)
        except OSError as err:
            if err.errno in _GONE:
                raise Vanished from None
            if err.errno == errno.EACCES:
                return None
            raise
        ino = self._links.get(link)
        if ino is None:
            ino = self._links[link] = parse_ns_link(link)
        return ino

    def _threads(self, dir_fd: int, leader: Task) -> list[Task]:
        """The group's other threads (a thread that exits meanwhile is skipped)."""
        try:
            task_fd = os.open("task", _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as err:
            if err.errno in _GONE:
                raise Vanished from None
            raise
        try:
            names = os.listdir(task_fd)
        finally:
            os.close(task_fd)
        found = []
        for name in names:
            if not name.isdigit() or int(name) == leader.host_pid:
                continue
            try:
                tid_fd = os.open(f"task/{name}", _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as err:
                if err.errno in _GONE:
                    continue
                raise
            try:
                found.append(self._read(tid_fd, False, leader.ns_ino, leader.host_pid))
            except Vanished:
                continue
            finally:
                os.close(tid_fd)
        return found
