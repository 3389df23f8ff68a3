"""The daemon's control socket: one JSON request (with fds for `open`: the namespace's nsfs fd, the
mount's /dev/fuse fd, the mounting process's mount namespace) and one JSON reply."""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from typing import Any

MAX_MESSAGE = 1 << 20


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def request(
    path: str, message: dict[str, Any], fds: Sequence[int] = (), timeout: float = 10.0
) -> dict[str, Any]:
    """Send one request (passing fds) and wait for the reply. OSError when no daemon listens at path."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        if fds:
            socket.send_fds(sock, [encode(message)], list(fds))
        else:
            sock.sendall(encode(message))
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data) if data else {"ok": False, "error": "no reply"}
    return reply


def receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One request from a connected socket (blocking until its newline)."""
    from pidns.fuse.holder import recv_fds  # the daemon's side only: clients never load it

    data, fds = recv_fds(sock, MAX_MESSAGE, 4)  # close-on-exec, unlike socket.recv_fds's
    while data and not data.endswith(b"\n"):
        more = sock.recv(MAX_MESSAGE)
        if not more:
            break
        data += more
    return json.loads(data), fds
