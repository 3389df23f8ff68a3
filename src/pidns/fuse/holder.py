"""The holder: a small process that keeps FUSE connections open while their server is replaced.

A FUSE mount's connection lives as long as some process holds its /dev/fuse fd. The server hands
the holder a duplicate of each connection's fd (with whatever else the server needs to take it up
again: the inode table's file, say, and a description in JSON), so that the server's death does not
end the connection: the kernel keeps queueing requests, and a successor takes them up.

The holder knows nothing of what the fds are. It listens on a Unix socket (mode 0600: its user
alone, and root, may talk to it), keeps entries (key -> JSON meta and fds), and watches one
attached server through the connection that server attached on (the "life line"):

- the server says `leaving` with `handover` before it goes (an upgrade): every entry stays and a
  successor is started at once;
- the life line ends without that (the server was killed): entries whose meta does not say
  `"survives": true` are closed (their mounts then fail as if no holder existed: the kernel aborts
  a connection once its last fd closes), the rest stay, and a successor is started;
- a successor that exits without attaching is started again, a little later each time; after
  GIVE_UP failures in a row the holder closes everything and leaves (no mount hangs on a server
  that cannot start);
- a server that attached with `stuck_after` and sends no `beat` for that long (stopped, or
  stuck) is SIGKILLed, and then replaced as a killed one is: readers wait, and get their answers
  from the successor, before the kernel's request timeout would cut the connections off;
- with `--spare`, a spare successor waits ready: started a moment after each server attaches,
  its stdin a socket to the holder, it loads, says `loaded`, and reads one line, the pid it
  succeeds. A killed server's successor is that spare, told at once: the start of a new
  interpreter and its imports, which make most of a takeover on a loaded machine, are behind it.
  A spare runs the code installed when it started: an upgrade (a `leaving` server with a
  successor of its own) ends it, and the next server's spare loads the new code. EOF tells a
  spare to leave;
- with no entry and no attached server left, the holder leaves.

Requests (one JSON line each, fds as SCM_RIGHTS with it; one JSON line in answer):
  attach {pid, thread, stuck_after}  this connection is the server's life line, `thread` (a
                          thread id of the server's that only waits) its death, and a silence
                          of `stuck_after` s (0: never) its being stuck; answers the generation
  beat                    the attached server is not stuck
  put {key, meta} + fds   keep fds under key (replacing what key held)
  meta {key, meta}        replace key's meta
  drop {key}              close key's fds
  take                    the keys held
  get {key}               key's meta, with its fds
  leaving {handover, successor}  the attached server is about to end (and has started that
                          successor itself: the holder waits for it instead of starting one)
  status                  pids, generation, entries, fds held

Only the standard library, no pidns import: as simple as an init, so that it never needs the
upgrade the server it keeps gets.

    python -m pidns.fuse.holder [--spare] SOCKET LOG -- SUCCESSOR-ARGV...

SUCCESSOR-ARGV runs under this same interpreter (its argv[0] should name it), with
`--after PID` added: the server it succeeds (0: none), which may not have ended entirely yet; a
spare with `--spare` added instead, and that pid on its stdin.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

ATTACH_WAIT = 10.0  # s a started successor has to attach
GIVE_UP = 5  # successors in a row that never attached
SPARE_DELAY = 1.0  # s after a server attaches before its spare starts: not during its takeover
MAX_FDS = 16  # per message
MAX_LINE = 1 << 20
PIDFD_THREAD = os.O_EXCL  # pidfd_open flag (6.9+): readable once that one thread has exited


class _Client:
    __slots__ = ("buffer", "fds", "leaving", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.fds: list[int] = []
        self.leaving: bool | None = None  # None: no word; True: hand over; False: for good


class _Spare:
    """A spare successor: the holder's child, loaded and waiting on its end of `sock`."""

    __slots__ = ("loaded", "pid", "sock")

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.loaded = False

    def end(self) -> None:
        """SIGKILL and reap it: it holds nothing, and nothing may outlive the holder."""
        self.sock.close()
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


class Holder:
    def __init__(
        self, listener: socket.socket, successor: list[str], log_path: str, spare: bool = False
    ) -> None:
        self.listener = listener
        self.successor = successor
        self.log_path = log_path
        self.spares = spare  # whether to keep a spare successor ready
        self.spare: _Spare | None = None
        self.spare_due = 0.0  # monotonic time to start a spare (0: none due)
        self.entries: dict[str, tuple[dict[str, Any], list[int]]] = {}
        self.clients: dict[int, _Client] = {}
        self.server: _Client | None = None  # the attached server's life line
        self.server_pid = 0
        # A thread of the server's (its "sentinel"): a killed server may not end its process for
        # a long time (a thread of it waits, unkillably, for a directory lock that a request to
        # that very server holds), and with it its end of the life line. Its other threads end at
        # once: that is its death, and the successor, by serving that request, lets the rest of
        # it end.
        self.server_thread = -1
        self.last_server = 0  # the successor is told whom it succeeds
        self.generation = 0
        self.child = 0  # a successor started (or announced) and not attached yet
        self.child_own = False  # started by the holder (its child, to reap)
        self.announced = 0  # the successor a leaving server started itself
        self.child_started = 0.0
        self.failures = 0
        self.next_start = 0.0  # monotonic time of the next successor start (0: none due)
        self.born = time.monotonic()
        self.stopping = False
        self.stuck_after = 0.0  # s without a beat after which the attached server is killed
        self.last_beat = 0.0

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        while not self.stopping:
            try:
                if not self._turn():
                    break
            except Exception:  # nothing may end the holder but its own rules
                import traceback

                traceback.print_exc()
                time.sleep(0.05)
        sys.stderr.write(f"pidns-holder: leaving ({len(self.entries)} connections held)\n")
        self._close_all()

    def _turn(self) -> bool:
        """One turn of the loop; False when the holder is done."""
        self._reap()
        now = time.monotonic()
        self._kill_if_stuck(now)
        if self.next_start and now >= self.next_start:
            self._start_successor()
        if self.spare_due and now >= self.spare_due:
            self._start_spare()
        if self._done(now):
            return False
        socks: list[socket.socket | int] = [
            self.listener,
            *(c.sock for c in self.clients.values()),
        ]
        if self.server_thread >= 0:
            socks.append(self.server_thread)
        if self.spare is not None:
            socks.append(self.spare.sock)
        timeout = 0.5
        for due in (self.next_start, self.spare_due):
            if due:
                timeout = max(0.0, min(timeout, due - now))
        # poll, not select: with a few hundred views the holder's fds pass FD_SETSIZE
        poller = select.poll()
        by_fd: dict[int, socket.socket | int] = {}
        for sock in socks:
            fd = sock if isinstance(sock, int) else sock.fileno()
            by_fd[fd] = sock
            poller.register(fd, select.POLLIN)
        try:
            events = poller.poll(int(timeout * 1000))
        except InterruptedError:
            return True
        for fd, _mask in events:
            sock = by_fd[fd]
            if sock is self.listener:
                self._accept()
            elif self.spare is not None and sock is self.spare.sock:
                self._spare_says(self.spare)
            elif isinstance(sock, int):
                if self.server is not None:
                    self._gone(self.server)  # its sentinel thread ended: it is dead
            else:
                client = self.clients.get(sock.fileno())
                if client is not None:
                    self._readable(client)
        return True

    def _kill_if_stuck(self, now: float) -> None:
        server = self.server
        if server is None or server.leaving is not None or not self.stuck_after:
            return
        if now - self.last_beat <= self.stuck_after:
            return
        sys.stderr.write(
            f"pidns-holder: server {self.server_pid} sent no beat for {self.stuck_after:.0f} s:"
            " killed, to be replaced\n"
        )
        self.last_beat = now  # once: its death (the sentinel) follows
        with contextlib.suppress(OSError):
            os.kill(self.server_pid, signal.SIGKILL)

    def _done(self, now: float) -> bool:
        if self.server is not None or self.child or self.next_start:
            return False
        if self.entries:
            return False
        return now - self.born > ATTACH_WAIT or self.generation > 0

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        sock.settimeout(5)
        self.clients[sock.fileno()] = _Client(sock)

    def _readable(self, client: _Client) -> None:
        try:
            data, fds = recv_fds(client.sock, 65536, MAX_FDS)
        except OSError:
            data, fds = b"", []
        client.fds.extend(fds)
        if not data:
            self._gone(client)
            return
        client.buffer += data
        if len(client.buffer) > MAX_LINE:
            self._gone(client)
            return
        while b"\n" in client.buffer:
            line, client.buffer = client.buffer.split(b"\n", 1)
            fds, client.fds = client.fds, []
            try:
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError("not an object")
                answer = self._handle(client, message, fds)
            except Exception as err:  # a bad request must not end the holder
                answer = {"ok": False, "error": str(err)}
            finally:
                for fd in fds:  # what a request did not keep
                    with contextlib.suppress(OSError):
                        os.close(fd)
            reply_fds = answer.pop("_fds", [])
            try:
                payload = (json.dumps(answer) + "\n").encode()
                if reply_fds:
                    socket.send_fds(client.sock, [payload], reply_fds)
                else:
                    client.sock.sendall(payload)
            except OSError:
                self._gone(client)
                return

    def _gone(self, client: _Client) -> None:
        self.clients.pop(client.sock.fileno(), None)
        for fd in client.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        client.sock.close()
        if client is not self.server:
            return
        self.server = None
        self.last_server = self.server_pid
        if self.server_thread >= 0:
            os.close(self.server_thread)
            self.server_thread = -1
        handover = client.leaving is True
        if client.leaving is None:
            # Killed: only connections that a successor can take up without losing a request
            # stay; the others end as they would have without a holder.
            for key in [k for k, (meta, _) in self.entries.items() if not meta.get("survives")]:
                self._drop(key)
        if handover and self.announced:
            self.child, self.child_own = self.announced, False  # it attaches by itself
            self.child_started = time.monotonic()
            self.announced = 0
        elif handover or (client.leaving is None and self.entries):
            self.next_start = time.monotonic()  # at once
        else:
            for key in list(self.entries):
                self._drop(key)

    # -- requests --------------------------------------------------------------------------------

    def _handle(self, client: _Client, message: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        op = message.get("op")
        if op == "attach":
            if self.server is not None:
                return {"ok": False, "error": f"server {self.server_pid} is attached"}
            pid, _uid, _gid = struct.unpack(
                "=iII", client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            )
            self.server = client
            self.server_pid = pid  # the kernel's word, not the message's
            self.server_thread = _thread_pidfd(pid, message.get("thread"))
            self.generation += 1
            if self.child and self.child == self.server_pid:
                self.child = 0
            self.failures = 0
            self.next_start = 0.0
            self.stuck_after = max(0.0, float(message.get("stuck_after") or 0))
            self.last_beat = time.monotonic()
            if self.spares and self.spare is None:
                self.spare_due = self.last_beat + SPARE_DELAY
            return {"ok": True, "generation": self.generation, "holder": os.getpid()}
        if op == "status":
            return {
                "ok": True,
                "holder": os.getpid(),
                "server": self.server_pid if self.server is not None else 0,
                "spare": self.spare.pid if self.spare is not None else 0,
                "spare_loaded": self.spare is not None and self.spare.loaded,
                "generation": self.generation,
                "entries": len(self.entries),
                "fds": sum(len(f) for _m, f in self.entries.values()),
            }
        if op == "take":
            return {"ok": True, "keys": list(self.entries)}
        if op == "get":
            entry = self.entries.get(str(message.get("key")))
            if entry is None:
                return {"ok": False, "error": "no such key"}
            return {"ok": True, "meta": entry[0], "_fds": entry[1]}
        if client is not self.server:
            return {"ok": False, "error": "attach first"}
        if op == "beat":
            self.last_beat = time.monotonic()
            return {"ok": True}
        if op == "put":
            key = str(message["key"])
            meta = message.get("meta") or {}
            if key in self.entries:
                self._drop(key)
            self.entries[key] = (dict(meta), list(fds))
            fds.clear()  # kept
            return {"ok": True}
        if op == "meta":
            key = str(message["key"])
            if key not in self.entries:
                return {"ok": False, "error": "no such key"}
            self.entries[key] = (dict(message.get("meta") or {}), self.entries[key][1])
            return {"ok": True}
        if op == "drop":
            self._drop(str(message["key"]))
            return {"ok": True}
        if op == "leaving":
            client.leaving = bool(message.get("handover"))
            self.announced = int(message.get("successor") or 0)
            if self.announced or not client.leaving:
                self._end_spare()  # the old code's: the next server's spare loads the new
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def _drop(self, key: str) -> None:
        _meta, fds = self.entries.pop(key, ({}, []))
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- successors ------------------------------------------------------------------------------

    def _start_successor(self) -> None:
        self.next_start = 0.0
        if self.server is not None or self.child:
            return
        if not os.path.isdir(os.path.dirname(self.log_path)):
            # its state directory is gone (a home deleted): no server can start there, and a
            # spare would make it anew
            sys.stderr.write(f"pidns-holder: cannot start a server: {self.log_path}: gone\n")
            self._failed()
            return
        if self._wake_spare():
            return
        self.child = self._spawn([*self.successor, "--after", str(self.last_server)])
        if not self.child:
            self._failed()
            return
        self.child_own = True
        self.child_started = time.monotonic()

    def _wake_spare(self) -> bool:
        """Make the spare the successor, when there is one that hears it."""
        spare, self.spare = self.spare, None
        if spare is None:
            return False
        try:
            spare.sock.sendall(f"{self.last_server}\n".encode())
        except OSError:  # it is ending: a successor is started as without one
            spare.end()
            return False
        spare.sock.close()
        self.child, self.child_own = spare.pid, True
        self.child_started = time.monotonic()
        return True

    def _start_spare(self) -> None:
        self.spare_due = 0.0
        if self.spare is not None or self.server is None:
            return
        mine, its = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            pid = self._spawn([*self.successor, "--spare"], stdin=its.fileno())
        finally:
            its.close()
        if pid:
            self.spare = _Spare(pid, mine)
        else:
            mine.close()

    def _spare_says(self, spare: _Spare) -> None:
        try:
            data = spare.sock.recv(64)
        except OSError:
            data = b""
        if data.startswith(b"loaded"):
            spare.loaded = True
        else:
            self._spare_ended(reaped=False)

    def _spare_ended(self, reaped: bool) -> None:
        """The spare ended unused: a successor is started as without one, should one be due."""
        spare, self.spare = self.spare, None
        if spare is None:
            return
        sys.stderr.write(f"pidns-holder: the spare {spare.pid} ended unused\n")
        if reaped:
            spare.sock.close()  # its pid is no longer its own to kill
        else:
            spare.end()

    def _end_spare(self) -> None:
        self.spare_due = 0.0
        if self.spare is not None:
            self.spare.end()
            self.spare = None

    def _spawn(self, argv: list[str], stdin: int = -1) -> int:
        """Start argv (stdin: that fd, else /dev/null; output to the log); 0 when it failed."""
        try:
            log = os.open(
                self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        except OSError as err:  # its directory is gone: no server can start there either
            sys.stderr.write(f"pidns-holder: cannot start a server: {self.log_path}: {err}\n")
            return 0
        take_stdin = (
            (os.POSIX_SPAWN_DUP2, stdin, 0)
            if stdin >= 0
            else (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)
        )
        try:
            # this interpreter (argv[0] still names it, and with it its environment): it may sit
            # where the user cannot reach it by path
            return os.posix_spawn(
                "/proc/self/exe",
                argv,
                dict(os.environ),
                file_actions=[
                    take_stdin,
                    (os.POSIX_SPAWN_DUP2, log, 1),
                    (os.POSIX_SPAWN_DUP2, log, 2),
                ],
                setsid=True,
            )
        except OSError as err:
            sys.stderr.write(f"pidns-holder: cannot start a server: {err}\n")
            return 0
        finally:
            os.close(log)

    def _reap(self) -> None:
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if not pid:
                break
            if pid == self.child:  # ended before it attached
                self.child = 0
                self._failed()
            elif self.spare is not None and pid == self.spare.pid:
                self._spare_ended(reaped=True)
        if self.child and not self.child_own:
            try:
                os.kill(self.child, 0)
            except ProcessLookupError:  # not ours to reap: gone without attaching
                self.child = 0
                self._failed()
                return
            except OSError:
                pass
        if self.child and time.monotonic() - self.child_started > ATTACH_WAIT:
            with contextlib.suppress(OSError):
                os.kill(self.child, signal.SIGKILL)
            if not self.child_own:
                self.child = 0
                self._failed()

    def _failed(self) -> None:
        self.failures += 1
        if self.failures >= GIVE_UP:
            sys.stderr.write("pidns-holder: no server could start: closing every connection\n")
            for key in list(self.entries):
                self._drop(key)
            return
        self.next_start = time.monotonic() + 0.2 * 2**self.failures

    def _close_all(self) -> None:
        self._end_spare()
        for key in list(self.entries):
            self._drop(key)
        for client in list(self.clients.values()):
            client.sock.close()
        self.clients.clear()


def recv_fds(sock: socket.socket, bufsize: int, maxfds: int) -> tuple[bytes, list[int]]:
    """What socket.recv_fds gives, the fds close-on-exec. socket.recv_fds (3.11) drops the flags
    it is given, MSG_CMSG_CLOEXEC with them: every fd the holder keeps would then pass to each
    successor it starts, which never learns of them and keeps them for its life (each view's
    connection, inode table and namespace once more, after the view has ended too)."""
    data, ancdata, _flags, _addr = sock.recvmsg(
        bufsize, socket.CMSG_SPACE(maxfds * 4), socket.MSG_CMSG_CLOEXEC
    )
    fds = array.array("i")
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(cdata[: len(cdata) - len(cdata) % fds.itemsize])
    return data, list(fds)


def _thread_pidfd(pid: int, thread: object) -> int:
    """A pidfd readable once the server is dead: that of `thread`, one of its threads that does
    nothing but wait (SIGKILL ends it at once), else that of its main thread; -1 on a kernel
    without thread pidfds (the life line's end only). Not the main thread's when there is a
    choice: a thread-group leader's pidfd is not readable before the whole group has ended
    (newer kernels), and a killed server's group may not end until its successor serves."""
    if isinstance(thread, int) and thread > 0 and thread != pid:
        try:
            fd = os.pidfd_open(thread, PIDFD_THREAD)
        except OSError:
            fd = -1
        if fd >= 0:
            if os.path.exists(f"/proc/{pid}/task/{thread}"):  # the server's own, after the open
                return fd
            os.close(fd)
    try:
        return os.pidfd_open(pid, PIDFD_THREAD)
    except OSError:
        return -1


def main(argv: list[str]) -> int:
    spare = argv[:1] == ["--spare"]
    if spare:
        argv = argv[1:]
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write(
            "usage: python -m pidns.fuse.holder [--spare] SOCKET LOG -- SUCCESSOR-ARGV...\n"
        )
        return 2
    path, log_path, successor = argv[0], argv[1], argv[3:]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old_mask = os.umask(0o177)  # the socket is born 0600: no moment where others may connect
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        listener.bind(path)
    except OSError as err:
        sys.stderr.write(f"pidns-holder: cannot listen at {path}: {err.strerror}\n")
        return 1
    finally:
        os.umask(old_mask)
    listener.listen(16)
    ino = os.stat(path).st_ino
    holder = Holder(listener, successor, log_path, spare)

    def stop(*_: object) -> None:
        holder.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        holder.run()
    finally:
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == ino:
                os.unlink(path)
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
