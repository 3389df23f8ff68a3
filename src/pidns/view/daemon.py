"""The per-user daemon: serves every FUSE view of its user, each mount on its own /dev/fuse fd.

`pidns mount` mounts (mount(2) as root, fusermount3 otherwise) in its own mount namespace and hands
the connection's fd to this daemon with the namespace's nsfs fd; a view's threads answer that fd
until it is unmounted (the device then reads ENODEV). Views of one namespace share its instance; the
registry knows every view, which is what lets one exit be flushed from all of them.

Threads: the main one answers the control socket; each view has its request threads; one watcher
reports exits; one notifier writes invalidations. The daemon leaves when it has served no view for
LINGER seconds.

    python -m pidns.view.daemon [--foreground] [--debug]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

from pidns.errors import PidnsError
from pidns.fuse.bridge import Bridge
from pidns.fuse.server import REQUEST_TIMEOUT, Connection, Notifier, Watchdog
from pidns.kernel import fuse_mount, pidfd
from pidns.view import control, state
from pidns.view.instances import Instance, Registry, View
from pidns.view.nodes import Root
from pidns.view.options import ViewOptions
from pidns.view.watch import Listener, Watcher

log = logging.getLogger("pidns.daemon")

LINGER = 2.0  # s without views before the daemon exits (a burst of mounts reuses it)
_PEERCRED = struct.Struct("=iII")  # struct ucred: pid, uid, gid


class Daemon(Listener):
    def __init__(self) -> None:
        self.lock = threading.RLock()  # views, sessions and instances change under it
        self.registry = Registry()
        self.notifier = Notifier()
        self.watchdog = Watchdog()  # each view: a request thread, a standby for when it is stuck
        self.request_timeout = _request_timeout()
        # PIDNS_FUSE_PASSTHROUGH=0: never negotiate passthrough (reads by direct I/O, as without
        # the privilege it needs)
        self.passthrough = os.environ.get("PIDNS_FUSE_PASSTHROUGH", "1") != "0"
        self.sessions: dict[str, Connection] = {}  # view id -> the connection of its mount
        self.auto_unmount: dict[str, int] = {}  # view id -> mount namespace fd (-1: the daemon's)
        self.own_mntns = os.stat("/proc/self/ns/mnt").st_ino
        self.own_pidns = os.stat("/proc/self/ns/pid").st_ino
        self.watcher = Watcher(self.registry, self, self.lock)
        self.stop = threading.Event()
        self.idle_since = time.monotonic()
        self.lxcfs_trees: dict[str, str] = {}  # `pidns lxcfs` mounts: id -> mountpoint
        self._lxcfs_ids = 0

    # -- exits: the watcher's listener (a node's owner is its task's host pid) --------------------

    def reaped(self, host_pid: int) -> None:
        for session in list(self.sessions.values()):
            session.bridge.invalidate_owner(host_pid)

    def shown(self, host_pid: int) -> bool:
        return any(host_pid in s.bridge.table.by_owner for s in list(self.sessions.values()))

    def shown_pids(self) -> list[int]:
        owners = [o for s in list(self.sessions.values()) for o in s.bridge.table.owners()]
        return [pid for pid in owners if isinstance(pid, int)]

    def replaced(self, host_pid: int) -> bool:
        return any(s.bridge.table.stale(host_pid) for s in list(self.sessions.values()))

    def namespace_died(self, instance: Instance) -> None:
        """The namespace's init was reaped: its views show a dead namespace; auto-unmount them."""
        unmount = []
        with self.lock:
            for view in list(instance.views.values()):
                session = self.sessions.get(view.id)
                if session is not None:
                    session.bridge.invalidate_all()
                if view.id in self.auto_unmount and view.mountpoint:
                    unmount.append((view.mountpoint, self.auto_unmount.pop(view.id)))
        for mountpoint, mnt_fd in unmount:
            _unmount_lazily(mountpoint, mnt_fd)
            state.forget(mountpoint)

    def _session_ended(self, session: Connection) -> None:
        """The mount is gone (the device read ENODEV): close its view."""
        with self.lock:
            view_id = session.name
            self.sessions.pop(view_id, None)
            self.lxcfs_trees.pop(view_id, None)
            self.registry.close_view(view_id)
            fd = self.auto_unmount.pop(view_id, -1)
            if fd >= 0:
                os.close(fd)
            if not self.sessions:
                self.idle_since = time.monotonic()
        log.info("view %s unmounted", view_id)

    # -- control requests ----------------------------------------------------------------------

    def handle(
        self, message: dict[str, Any], fds: list[int], peer_pid: int, peer_uid: int
    ) -> dict[str, Any]:
        """One control request from peer_pid, running as peer_uid (the socket's SO_PEERCRED)."""
        op = message.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid(), "watch": self.watcher.mode}
        if op == "open":
            return self._open(message, fds, peer_pid, peer_uid)
        if op == "lxcfs":
            return self._open_lxcfs(message, fds, peer_pid)
        if op == "list":
            with self.lock:
                views = [self._describe(v) for v in self.registry.views.values()]
                views += [
                    {"view": tree_id, "mountpoint": mountpoint, "ns": 0, "dead": False}
                    for tree_id, mountpoint in self.lxcfs_trees.items()
                ]
                return {"ok": True, "pid": os.getpid(), "views": views}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def _open(
        self, message: dict[str, Any], fds: list[int], peer_pid: int, peer_uid: int
    ) -> dict[str, Any]:
        if len(fds) not in (2, 3):
            return {
                "ok": False,
                "error": "open needs an nsfs fd, a /dev/fuse fd and optionally a mount namespace fd",
            }
        if not self._same_pidns(peer_pid):
            return {
                "ok": False,
                "error": "the view daemon serves only mounts made in its own PID namespace",
            }
        try:
            # the owner is the kernel's word for who asked, not the message's
            options = ViewOptions.from_wire(message.get("options") or {}, owner_uid=peer_uid)
        except ValueError as err:
            return {"ok": False, "error": str(err)}
        mnt_fd = fds.pop(2) if len(fds) == 3 else -1
        fuse_fd = fds.pop(1)
        ns_fd = fds.pop(0)
        try:
            if mnt_fd >= 0 and os.fstat(mnt_fd).st_ino == self.own_mntns:
                os.close(mnt_fd)
                mnt_fd = -1
            with self.lock:
                try:
                    view = self.registry.open_view(
                        ns_fd, options, str(message.get("mountpoint", ""))
                    )
                except PidnsError as err:
                    os.close(fuse_fd)
                    return {"ok": False, "error": str(err)}
                bridge = Bridge(Root(view), view.admits, on_owner=self._watch)
                session = Connection(
                    fuse_fd,
                    bridge,
                    self.notifier,
                    watchdog=self.watchdog,
                    request_timeout=self.request_timeout,
                    passthrough=self.passthrough,
                    on_end=self._session_ended,
                    name=view.id,
                )
                fuse_fd = -1
                self.sessions[view.id] = session
                if message.get("auto_unmount"):
                    self.auto_unmount[view.id] = mnt_fd
                    mnt_fd = -1
                session.start()
                self.watcher.watch(view.instance.init_host)
                return {
                    "ok": True,
                    "view": view.id,
                    "ns": view.instance.id.ino,
                    "shared": len(view.instance.views) > 1,
                    "pid": os.getpid(),
                }
        finally:
            for fd in (mnt_fd, fuse_fd):
                if fd >= 0:
                    os.close(fd)

    def _same_pidns(self, peer_pid: int) -> bool:
        """FUSE numbers each requester in the mounting process's pid namespace (the
        connection's): this daemon reads those numbers as its own, so it serves only those."""
        try:
            return peer_pid > 0 and os.stat(f"/proc/{peer_pid}/ns/pid").st_ino == self.own_pidns
        except OSError:
            return False

    def _open_lxcfs(self, message: dict[str, Any], fds: list[int], peer_pid: int) -> dict[str, Any]:
        """Serve a `pidns lxcfs` tree on the /dev/fuse fd given: every reader sees its own
        cgroup's values, so there is no namespace to open."""
        from pidns.view import lxcfs

        if len(fds) != 1:
            return {"ok": False, "error": "lxcfs needs one /dev/fuse fd"}
        if not self._same_pidns(peer_pid):
            return {
                "ok": False,
                "error": "the view daemon serves only mounts made in its own PID namespace",
            }
        fuse_fd = fds.pop(0)
        with self.lock:
            self._lxcfs_ids += 1
            tree_id = f"l{self._lxcfs_ids}"
            root = lxcfs.build(self.registry, tree_id, bool(message.get("cpus_from_quota")))
            session = Connection(
                fuse_fd,
                Bridge(root),
                self.notifier,
                watchdog=self.watchdog,
                request_timeout=self.request_timeout,
                on_end=self._session_ended,
                name=tree_id,
            )
            self.sessions[tree_id] = session
            self.lxcfs_trees[tree_id] = str(message.get("mountpoint", ""))
            session.start()
        return {"ok": True, "view": tree_id, "ns": 0, "pid": os.getpid()}

    def _watch(self, owner: object) -> None:
        """A task's names got inodes: its exit must reach the views (owners are host pids)."""
        assert isinstance(owner, int)
        self.watcher.watch(owner)

    def _describe(self, view: View) -> dict[str, Any]:
        session = self.sessions.get(view.id)
        nodes = list(session.bridge.table.nodes.values()) if session else []
        tasks = {n.owner for n in nodes if isinstance(n.owner, int)}
        gone = {pid for pid in tasks if not pidfd.exists(pid)}
        return {
            # What the kernel holds of the view: inodes, the tasks they show, and how many of
            # those tasks are gone (a leak when it stays above zero once the churn stops).
            "inodes": len(nodes),
            "tasks": len(tasks),
            "tasks_gone": len(gone),
            "gone_kinds": sorted({type(n).__name__ for n in nodes if n.owner in gone}),
            "view": view.id,
            "mountpoint": view.mountpoint,
            "ns": view.instance.id.ino,
            "dead": view.instance.dead,
            "instance_views": sorted(view.instance.views),
            "options": view.options.to_wire(),
            # requests read by operation (round trips readers paid), what passthrough did
            "fuse": session.stats() if session else {},
        }

    # -- the main thread -----------------------------------------------------------------------

    def serve_control(self, listener: socket.socket) -> None:
        listener.settimeout(0.2)
        while not self.stop.is_set():
            with self.lock:
                if not self.sessions and time.monotonic() - self.idle_since > LINGER:
                    return
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                self._one_request(conn)

    def _one_request(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            conn.settimeout(5)
            pid, uid, _gid = _PEERCRED.unpack(
                conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
            message, fds = control.receive(conn)
            reply = self.handle(message, fds, pid, uid)
        except Exception as err:  # a bad client must not stop the daemon
            log.exception("control request failed")
            reply = {"ok": False, "error": str(err)}
        finally:
            for fd in fds:
                os.close(fd)
        with contextlib.suppress(OSError):
            conn.sendall(control.encode(reply))

    def shutdown(self) -> None:
        """Leaving with views still mounted (a signal): unmount them, so none is left dangling."""
        with self.lock:
            views = [
                (v.mountpoint, self.auto_unmount.get(v.id, -1))
                for v in self.registry.views.values()
            ]
            views += [(mountpoint, -1) for mountpoint in self.lxcfs_trees.values()]
        for mountpoint, mnt_fd in views:
            if mountpoint:
                _unmount_lazily(mountpoint, mnt_fd)
                state.forget(mountpoint)
        self.watcher.stop()
        self.watchdog.stop()
        self.notifier.stop()
        self.registry.close()


def _request_timeout() -> int:
    """PIDNS_REQUEST_TIMEOUT (s; 0: the kernel's own default) or REQUEST_TIMEOUT."""
    try:
        return max(0, int(os.environ.get("PIDNS_REQUEST_TIMEOUT", REQUEST_TIMEOUT)))
    except ValueError:
        log.warning("PIDNS_REQUEST_TIMEOUT is not a number of seconds: using %d", REQUEST_TIMEOUT)
        return REQUEST_TIMEOUT


def _unmount_lazily(mountpoint: str, mnt_fd: int) -> None:
    """Detach a view's mount, in the mount namespace it was made in (mnt_fd; -1: ours)."""
    if mnt_fd < 0:
        fuse_mount.unmount_quietly(mountpoint)
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            ["nsenter", f"--mount=/proc/self/fd/{mnt_fd}", "umount", "-l", "--", mountpoint],
            pass_fds=[mnt_fd],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
    os.close(mnt_fd)


def _take_lock(base: str, sock_path: str) -> int | None:
    """This user's daemon lock; None when another daemon answers. A daemon that is leaving still
    holds the lock for a moment: wait for it rather than leave the user without one."""
    lock = os.open(f"{base}/daemon.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + 10
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            pass
        with contextlib.suppress(OSError, ValueError):
            if control.request(sock_path, {"op": "ping"}, timeout=1).get("ok"):
                os.close(lock)
                return None
        if time.monotonic() > deadline:
            os.close(lock)
            return None
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pidns-daemon")
    parser.add_argument("--foreground", action="store_true")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
    )
    base = state.state_dir()
    sock_path = state.socket_path()
    lock = _take_lock(str(base), str(sock_path))
    if lock is None:
        return 0  # another daemon serves this user
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    listener.bind(str(sock_path))
    os.chmod(sock_path, 0o600)
    listener.listen(64)
    sock_ino = os.stat(sock_path).st_ino
    _raise_fd_limit()
    daemon = Daemon()
    daemon.watcher.start()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: daemon.stop.set())
    (base / "daemon.pid").write_text(json.dumps({"pid": os.getpid()}))
    try:
        daemon.serve_control(listener)
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            if os.stat(sock_path).st_ino == sock_ino:
                sock_path.unlink()
        daemon.shutdown()
        with contextlib.suppress(FileNotFoundError):
            (base / "daemon.pid").unlink()
        os.close(lock)
    return 0


def _raise_fd_limit() -> None:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    sys.exit(main())
