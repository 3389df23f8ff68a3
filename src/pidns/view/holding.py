"""The daemon's side of the holder (pidns.fuse.holder): what it keeps of each view, and the link.

Each view is one holder entry under its view id: fds [/dev/fuse, the inode table's memfd, the
namespace's nsfs fd, and the mounting process's mount namespace when the view unmounts itself], and
meta {mountpoint, options, auto_unmount, init (what INIT agreed), survives}. A daemon that starts
attaches to the holder (starting it when none answers) and takes up every entry it holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pidns.fuse.holder import recv_fds
from pidns.view import state

SUCCESSOR = [sys.executable, "-m", "pidns.view.daemon", "--takeover"]


def holder_path() -> Path:
    return state.state_dir() / "holder.sock"


@dataclass
class Entry:
    key: str
    meta: dict[str, Any]
    fds: list[int] = field(default_factory=list)


class HolderLink:
    """The attached daemon's life line to the holder: one connection, one request at a time."""

    def __init__(self, sock: socket.socket, generation: int, holder_pid: int) -> None:
        self.sock = sock
        self.generation = generation
        self.holder_pid = holder_pid
        self._buffer = b""

    def request(self, message: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        reply, got = _request(self.sock, message, fds or [], self)
        for fd in got:
            os.close(fd)
        return reply

    def get(self, key: str) -> Entry | None:
        reply, fds = _request(self.sock, {"op": "get", "key": key}, [], self)
        if not reply.get("ok"):
            for fd in fds:
                os.close(fd)
            return None
        return Entry(key, dict(reply.get("meta") or {}), fds)

    def entries(self) -> list[Entry]:
        keys = self.request({"op": "take"}).get("keys") or []
        return [e for key in keys if (e := self.get(str(key))) is not None]

    def close(self) -> None:
        self.sock.close()


def _request(
    sock: socket.socket, message: dict[str, Any], fds: list[int], link: HolderLink | None
) -> tuple[dict[str, Any], list[int]]:
    payload = (json.dumps(message) + "\n").encode()
    if fds:
        socket.send_fds(sock, [payload], fds)
    else:
        sock.sendall(payload)
    buffer = link._buffer if link is not None else b""
    got: list[int] = []
    while b"\n" not in buffer:
        data, more = recv_fds(sock, 65536, 16)
        got.extend(more)
        if not data:
            raise ConnectionError("the holder closed the connection")
        buffer += data
    line, rest = buffer.split(b"\n", 1)
    if link is not None:
        link._buffer = rest
    reply: dict[str, Any] = json.loads(line)
    return reply, got


def _connect(timeout: float = 5.0) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(str(holder_path()))
    except OSError:
        sock.close()
        return None
    return sock


def status() -> dict[str, Any] | None:
    """The holder's own account (pids, generation, entries, fds); None when none runs."""
    sock = _connect(2)
    if sock is None:
        return None
    with sock:
        try:
            return _request(sock, {"op": "status"}, [], None)[0]
        except (OSError, ValueError):
            return None


def _start_holder() -> None:
    """Started from a short-lived intermediate, in a session of its own: it is nobody's child
    but init's (or the subreaper's), and outlives whatever started it."""
    log = str(state.state_dir() / "daemon.log")
    middle = os.fork()
    if middle == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)
                out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                os.dup2(null, 0)
                os.dup2(out, 1)
                os.dup2(out, 2)
                os.closerange(3, 65536)
                argv = [
                    sys.executable,
                    "-m",
                    "pidns.fuse.holder",
                    "--spare",
                    str(holder_path()),
                    log,
                    "--",
                    *SUCCESSOR,
                ]
                os.execv("/proc/self/exe", argv)
        finally:
            os._exit(0)
    os.waitpid(middle, 0)


_sentinel: list[int] = []  # the native id of this process's sentinel thread, once started


def sentinel() -> int:
    """A thread that only waits, forever: the holder watches it (a thread pidfd) to know this
    daemon dead. SIGKILL ends it at once, while other threads of a killed daemon may linger (one
    writing an invalidation waits for a directory lock that a request to this daemon holds)."""
    if not _sentinel:
        started = threading.Event()

        def wait() -> None:
            _sentinel.append(threading.get_native_id())
            started.set()
            threading.Event().wait()

        threading.Thread(target=wait, name="holder-sentinel", daemon=True).start()
        started.wait()
    return _sentinel[0]


def attach(timeout: float = 10.0, stuck_after: float = 0.0) -> HolderLink:
    """Attach this daemon to its user's holder, starting one when none answers. A predecessor
    that is leaving may still be attached for a moment: wait for it. stuck_after: the holder
    kills this daemon when it sends no beat for that long (0: never)."""
    deadline = time.monotonic() + timeout
    thread = sentinel()
    started = False
    while True:
        sock = _connect()
        if sock is None:
            if not started:
                _start_holder()
                started = True
        else:
            try:
                reply, _ = _request(
                    sock,
                    {
                        "op": "attach",
                        "pid": os.getpid(),
                        "thread": thread,
                        "stuck_after": stuck_after,
                    },
                    [],
                    None,
                )
            except (OSError, ValueError):
                reply = {"ok": False}
            if reply.get("ok"):
                sock.settimeout(10)
                return HolderLink(sock, int(reply["generation"]), int(reply["holder"]))
            sock.close()
        if time.monotonic() > deadline:
            raise OSError("the fd holder does not answer (see daemon.log)")
        time.sleep(0.02)


def close_quietly(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
