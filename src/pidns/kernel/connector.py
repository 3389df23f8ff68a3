"""The netlink proc connector: fork and exit events with host pids.

Works only from the initial user and pid namespaces (and, before Linux 6.6, with CAP_NET_ADMIN);
`open_listener` raises OSError when the kernel does not confirm the subscription, so callers can fall
back to pidfds.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from dataclasses import dataclass

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
NLMSG_DONE = 3
SO_RCVBUFFORCE = 33  # asm-generic/socket.h (not exported by Python's socket module everywhere)
RECEIVE_BUFFER = 8 << 20  # about 100,000 events before the kernel drops any (ENOBUFS)
NLMSG_ERROR = 2

PROC_EVENT_NONE = 0x00000000  # the acknowledgement of a listen/ignore request
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_EXIT = 0x80000000
WANTED = PROC_EVENT_FORK | PROC_EVENT_EXIT

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_EVENT_HEAD = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
_FORK = struct.Struct("=iiii")  # parent pid, parent tgid, child pid, child tgid
_EXIT = struct.Struct("=iiIIii")  # pid, tgid, exit code, exit signal, parent pid, parent tgid


@dataclass(slots=True, frozen=True)
class Event:
    what: int  # PROC_EVENT_*
    pid: int  # the task the event is about (the child for fork)
    tgid: int
    parent_pid: int = 0


def open_listener() -> socket.socket:
    """A non-blocking netlink socket subscribed to proc events."""
    sock = socket.socket(
        socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_CONNECTOR
    )
    try:
        sock.bind((0, CN_IDX_PROC))
        _grow_buffer(sock, RECEIVE_BUFFER)
        _send_op(sock, PROC_CN_MCAST_LISTEN)
        sock.setblocking(False)
        _await_ack(sock)
        # Linux 6.6+ delivers only the kinds asked for (not exec, uid, comm... of every task on
        # the host); older kernels ignore this second request, unanswered.
        _send_op(sock, PROC_CN_MCAST_LISTEN, WANTED)
    except OSError:
        sock.close()
        raise
    return sock


def _grow_buffer(sock: socket.socket, size: int) -> None:
    """Room for a burst of events. SO_RCVBUF is capped at net.core.rmem_max (about 200 KiB on most
    hosts: a few thousand events); with CAP_NET_ADMIN SO_RCVBUFFORCE is not."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _await_ack(sock: socket.socket, timeout: float = 1.0) -> None:
    """The kernel answers a listen request with a PROC_EVENT_NONE carrying an errno, and not at all
    outside the initial namespaces: only an ack of 0 means events will come."""
    deadline = time.monotonic() + timeout
    poller = select.poll()  # not select(): the caller may hold fds above 1024
    poller.register(sock, select.POLLIN)
    while (left := deadline - time.monotonic()) > 0:
        if not poller.poll(left * 1000):
            break
        data = sock.recv(65536)
        at = _NLMSGHDR.size + _CN_MSG.size
        if (
            len(data) >= at + _EVENT_HEAD.size + 4
            and _EVENT_HEAD.unpack_from(data, at)[0] == PROC_EVENT_NONE
        ):
            err = struct.unpack_from("=I", data, at + _EVENT_HEAD.size)[0]
            if err:
                raise OSError(err, os.strerror(err), "proc connector listen")
            return
    raise OSError(errno.ETIMEDOUT, "the proc connector did not acknowledge the listen request")


def _send_op(sock: socket.socket, op: int, kinds: int = 0) -> None:
    """A listen/ignore request; with `kinds`, a struct proc_input naming the events wanted."""
    payload = struct.pack("=II", op, kinds) if kinds else struct.pack("=I", op)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, os.getpid())
    sock.send(header + cn)


def parse(data: bytes) -> list[Event]:
    """Events in one datagram (several netlink messages may share it)."""
    events = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        body = offset + _NLMSGHDR.size
        if kind == NLMSG_DONE and body + _CN_MSG.size + _EVENT_HEAD.size <= len(data):
            at = body + _CN_MSG.size
            what, _cpu, _ts = _EVENT_HEAD.unpack_from(data, at)
            at += _EVENT_HEAD.size
            if what == PROC_EVENT_FORK:
                ppid, ptgid, pid, tgid = _FORK.unpack_from(data, at)
                events.append(Event(what, pid, tgid, ptgid))
            elif what == PROC_EVENT_EXIT:
                pid, tgid, _code, _sig, ppid, _ptgid = _EXIT.unpack_from(data, at)
                events.append(Event(what, pid, tgid, ppid))
            elif what == PROC_EVENT_EXEC:
                pid, tgid = struct.unpack_from("=ii", data, at)
                events.append(Event(what, pid, tgid))
        offset += (length + 3) & ~3
    return events
