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
from pidns.fuse.tablefile import TableFile
from pidns.fuse.takeover import Negotiated
from pidns.kernel import fuse_abi, fuse_mount, pidfd
from pidns.procfs import held
from pidns.view import control, holding, state
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
        # Surviving its own death: the holder keeps every view's fds (holding.py)
        self.holder: holding.HolderLink | None = None
        self.holder_lock = threading.Lock()  # one holder request at a time
        self.generation = 0  # how many daemons the holder has had, this one included
        self.started = time.time()
        # PIDNS_FUSE_RESEND=0: behave as on a kernel without NOTIFY_RESEND (tests, comparisons)
        self.resend = os.environ.get("PIDNS_FUSE_RESEND", "1") != "0"
        self.restart = False  # asked to hand over to a successor
        self.held_meta: dict[str, dict[str, Any]] = {}  # view id -> what the holder keeps of it
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
        self._to_holder({"op": "drop", "key": session.name})
        file = session.bridge.table.file
        if file is not None:
            file.close()
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
            return {
                "ok": True,
                "pid": os.getpid(),
                "watch": self.watcher.mode,
                "generation": self.generation,
            }
        if op == "status":
            return self._status()
        if op == "restart":
            self.restart = True
            self.stop.set()
            return {"ok": True, "pid": os.getpid(), "generation": self.generation}
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
                return {
                    "ok": True,
                    "pid": os.getpid(),
                    "started": self.started,
                    "generation": self.generation,
                    "views": views,
                }
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
        held: list[int] = []  # the holder's copies
        try:
            if mnt_fd >= 0 and os.fstat(mnt_fd).st_ino == self.own_mntns:
                os.close(mnt_fd)
                mnt_fd = -1
            with self.lock:
                held.append(os.dup(ns_fd))
                # --virtualize: the sysfs files too, under a name only the client learns
                sys_name = f".pidns-sys-{os.urandom(8).hex()}" if options.virtualize else ""
                try:
                    view = self.registry.open_view(
                        ns_fd, options, str(message.get("mountpoint", "")), sys_name=sys_name
                    )
                except PidnsError as err:
                    os.close(fuse_fd)
                    return {"ok": False, "error": str(err)}
                bridge = self._bridge(view)
                table = TableFile.create()
                bridge.table.keep_in(table)
                session = self._connection(fuse_fd, bridge, view.id)
                held[:0] = [os.dup(fuse_fd), os.dup(table.fd)]
                fuse_fd = -1
                self.sessions[view.id] = session
                if message.get("auto_unmount"):
                    if mnt_fd >= 0:
                        held.append(os.dup(mnt_fd))
                    self.auto_unmount[view.id] = mnt_fd
                    mnt_fd = -1
                meta = {
                    "mountpoint": view.mountpoint,
                    "options": options.to_wire(),
                    "owner": options.owner_uid,
                    "auto_unmount": bool(message.get("auto_unmount")),
                    "init": None,
                    "survives": False,
                    "sys": sys_name,
                }
                self.held_meta[view.id] = meta
                self._to_holder({"op": "put", "key": view.id, "meta": meta}, held)
                session.start()
                self.watcher.watch(view.instance.init_host)
                return {
                    "ok": True,
                    "view": view.id,
                    "ns": view.instance.id.ino,
                    "shared": len(view.instance.views) > 1,
                    "pid": os.getpid(),
                    "sys": sys_name,
                }
        finally:
            for fd in (mnt_fd, fuse_fd, *held):
                if fd >= 0:
                    os.close(fd)

    # -- the holder: surviving this daemon (holding.py) --------------------------------------

    def _to_holder(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        """A request to the holder; a holder that went away costs the views only their survival."""
        with self.holder_lock:
            if self.holder is None:
                return
            try:
                reply = self.holder.request(message, fds)
            except (OSError, ValueError) as err:
                log.warning("the fd holder is gone (%s): views no longer survive this daemon", err)
                self.holder.close()
                self.holder = None
                return
        if not reply.get("ok"):
            log.warning("the fd holder refused %s: %s", message.get("op"), reply.get("error"))

    def beat(self) -> None:
        """Tell the holder, every BEAT s, that this daemon is not stuck: it can take its lock.
        Until the process ends: a holder told `leaving` no longer looks."""
        while True:
            time.sleep(BEAT)
            with self.lock:
                pass
            self._to_holder({"op": "beat"})

    def _initialized(self, session: Connection) -> None:
        """INIT answered: what it agreed goes to the holder with the connection."""
        negotiated = session.negotiated
        meta = self.held_meta.get(session.name)
        if negotiated is None or meta is None:
            return
        meta = {**meta, "init": negotiated.to_wire(), "survives": session.survives}
        self.held_meta[session.name] = meta
        self._to_holder({"op": "meta", "key": session.name, "meta": meta})

    def take_over(self) -> int:
        """Serve every view the holder keeps (a predecessor's); how many."""
        with self.holder_lock:
            entries = self.holder.entries() if self.holder is not None else []
        taken = 0
        for entry in entries:
            try:
                taken += self._adopt(entry)
            except Exception:
                log.exception("taking over view %s", entry.key)
                holding.close_quietly(entry.fds)
                self._to_holder({"op": "drop", "key": entry.key})
        if taken:
            # exits while no daemon listened: a zombie restored must still go when it is reaped
            self.watcher.recheck()
            adopted = [self.sessions[e.key] for e in entries if e.key in self.sessions]
            sweep = threading.Timer(SWEEP_AFTER, self._sweep_lost, args=(adopted,))
            sweep.daemon = True
            sweep.start()
        return taken

    def _sweep_lost(self, sessions: list[Connection]) -> None:
        """The inodes the predecessor's lost FORGETs left counted go (Connection.sweep_lost)."""
        for session in sessions:
            self.notifier.call(session, session.sweep_lost)

    def _bridge(self, view: View) -> Bridge:
        """The bridge of a view's proc tree; its handles are numbered by this daemon's generation,
        so that a successor tells its own from those it inherited."""
        return Bridge(
            Root(view), view.admits, on_owner=self._watch, handle_base=self.generation << 40
        )

    def _connection(
        self,
        fuse_fd: int,
        bridge: Bridge,
        name: str,
        adopted: Negotiated | None = None,
        passthrough: bool = True,
    ) -> Connection:
        """A view's or tree's connection: a new one, or one a dead daemon had negotiated
        (`adopted`). `pidns lxcfs` trees go without passthrough: their files are small and few."""
        return Connection(
            fuse_fd,
            bridge,
            self.notifier,
            watchdog=self.watchdog,
            request_timeout=self.request_timeout,
            passthrough=self.passthrough and passthrough,
            on_end=self._session_ended,
            name=name,
            adopted=adopted,
            on_init=self._initialized,
            resend=self.resend,
        )

    def _adopt_lxcfs(self, entry: holding.Entry) -> int:
        """A predecessor's `pidns lxcfs` tree: the same files, rebuilt; its inodes restored."""
        from pidns.view import lxcfs

        meta, fds = entry.meta, list(entry.fds)
        fuse_fd, table_fd = fds[:2]
        table = TableFile(table_fd, created=False)  # refused (another version) before all else
        with self.lock:
            root = lxcfs.build(self.registry, entry.key, bool(meta.get("cpus_from_quota")))
            bridge = Bridge(root)
            lost = bridge.table.restore(table)
            negotiated = Negotiated.from_wire(meta["init"])
            session = self._connection(fuse_fd, bridge, entry.key, negotiated, passthrough=False)
            self.sessions[entry.key] = session
            self.held_meta[entry.key] = meta
            self.lxcfs_trees[entry.key] = str(meta.get("mountpoint", ""))
            session.start()
        self._taken_over(bridge, lost, self.lxcfs_trees[entry.key], entry.key)
        return 1

    def _adopt(self, entry: holding.Entry) -> int:
        meta, fds = entry.meta, list(entry.fds)
        lxcfs_tree = meta.get("kind") == "lxcfs"
        # a view has its fuse, table and nsfs fds, a tree two; its INIT unanswered: not servable
        if len(fds) < (2 if lxcfs_tree else 3) or not meta.get("init"):
            holding.close_quietly(fds)
            self._to_holder({"op": "drop", "key": entry.key})
            return 0
        if lxcfs_tree:
            return self._adopt_lxcfs(entry)
        fuse_fd, table_fd, ns_fd = fds[:3]
        mnt_fd = fds[3] if len(fds) > 3 else -1
        options = ViewOptions.from_wire(meta.get("options") or {}, int(meta.get("owner", 0)))
        # a table of another version is refused before the view is opened: a view opened then
        # would stay registered, its ns_fd closed under it with the entry's fds
        table = TableFile(table_fd, created=False)
        with self.lock:
            view = self.registry.open_view(
                ns_fd,
                options,
                str(meta.get("mountpoint", "")),
                view_id=entry.key,
                sys_name=str(meta.get("sys") or ""),
            )
            if view.instance.init_gone():  # died while no daemon watched
                view.instance.die()
            bridge = self._bridge(view)
            lost = bridge.table.restore(table)
            session = self._connection(fuse_fd, bridge, view.id, Negotiated.from_wire(meta["init"]))
            self.sessions[view.id] = session
            self.held_meta[view.id] = meta
            if meta.get("auto_unmount"):
                self.auto_unmount[view.id] = mnt_fd
            elif mnt_fd >= 0:
                os.close(mnt_fd)
            session.start()
            if view.instance.init_host:
                self.watcher.watch(view.instance.init_host)
        self._taken_over(bridge, lost, view.mountpoint, view.id)
        return 1

    def _taken_over(
        self, bridge: Bridge, lost: list[tuple[int, bytes]], mountpoint: str, key: str
    ) -> None:
        """After a view or tree is adopted: names it lost are forgotten, its record names us."""
        for parent, name in lost:  # the kernel forgets those names where nobody uses them
            bridge.notify(fuse_abi.notify_inval_entry(parent, name))
        record = state.lookup(mountpoint) if mountpoint else None
        if record is not None and record.get("view") == key:
            record["daemon_pid"] = os.getpid()
            state.record(mountpoint, record)
        log.info("took over %s at %s (%d inodes lost)", key, mountpoint, len(lost))

    def hand_over(self, successor: int) -> None:
        """Leave every view to the successor: the holder keeps them all, whatever the kernel
        offers; the request threads stop reading and finish what they have."""
        self._to_holder({"op": "leaving", "handover": True, "successor": successor})
        sessions = list(self.sessions.values())
        for session in sessions:
            session.detach(0)
        deadline = time.monotonic() + 2
        for session in sessions:
            if not session.detach(max(0.0, deadline - time.monotonic())):
                log.warning(
                    "%s: a request is still being answered; left to the kernel", session.name
                )

    def _status(self) -> dict[str, Any]:
        with self.lock:
            views = [
                {"view": v.id, "mountpoint": v.mountpoint, "ns": v.instance.id.ino}
                for v in self.registry.views.values()
            ]
            sessions = list(self.sessions.values())
        return {
            "ok": True,
            "pid": os.getpid(),
            "started": self.started,
            "generation": self.generation,
            "holder": self.holder.holder_pid if self.holder is not None else 0,
            "resend": self.resend,
            # what the holder keeps: every view and `pidns lxcfs` tree
            "survive": {s.name: s.survives for s in sessions if s.name in self.held_meta},
            "views": views,
        }

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
        cpus_from_quota = bool(message.get("cpus_from_quota"))
        with self.lock:
            tree_id = ""
            while not tree_id or tree_id in self.sessions:  # not one a predecessor gave out
                self._lxcfs_ids += 1
                tree_id = f"l{self._lxcfs_ids}"
            bridge = Bridge(lxcfs.build(self.registry, tree_id, cpus_from_quota))
            table = TableFile.create()
            bridge.table.keep_in(table)
            held = [os.dup(fuse_fd), os.dup(table.fd)]
            session = self._connection(fuse_fd, bridge, tree_id, passthrough=False)
            mountpoint = str(message.get("mountpoint", ""))
            self.sessions[tree_id] = session
            self.lxcfs_trees[tree_id] = mountpoint
            meta = {
                "kind": "lxcfs",
                "mountpoint": mountpoint,
                "cpus_from_quota": cpus_from_quota,
                "init": None,
                "survives": False,
            }
            self.held_meta[tree_id] = meta
            try:
                self._to_holder({"op": "put", "key": tree_id, "meta": meta}, held)
            finally:
                holding.close_quietly(held)
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
        self._to_holder({"op": "leaving", "handover": False})  # for good: it lets go of all
        with self.holder_lock:
            if self.holder is not None:
                self.holder.close()
                self.holder = None
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


# After a takeover, the inodes the kernel forgot in FORGETs the dead daemon had read are looked
# for this long after: by then every answer the dead daemon wrote has reached the kernel's cache.
SWEEP_AFTER = 5.0
# The holder replaces a daemon that sends no beat for this long (stopped, or stuck), well before
# the kernel's request timeout would cut its views off; a beat comes every BEAT seconds.
STUCK_AFTER = 10.0
BEAT = 1.0


def _stuck_after(request_timeout: int) -> float:
    return min(STUCK_AFTER, request_timeout / 2) if request_timeout else STUCK_AFTER


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


def _take_lock(base: str, sock_path: str, after: int | None) -> int | None:
    """This user's daemon lock; None when another daemon answers. A daemon that is leaving still
    holds the lock for a moment: wait for it rather than leave the user without one. `after`: a
    successor (takeover) waits for its predecessor, that pid (0: none known) to let go of it."""
    lock = os.open(f"{base}/daemon.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + (30 if after is not None else 10)
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            pass
        if after and _main_thread_gone(after):
            # Killed, but a thread of it is stuck until this daemon answers its views: the lock
            # is ours once it is gone for good (the holder attaches one daemon only).
            threading.Thread(
                target=fcntl.flock, args=(lock, fcntl.LOCK_EX), name="lock", daemon=True
            ).start()
            return lock
        with contextlib.suppress(OSError, ValueError):
            answer = control.request(sock_path, {"op": "ping"}, timeout=1)
            if answer.get("ok") and (after is None or answer.get("pid") != after):
                os.close(lock)
                return None
        if time.monotonic() > deadline:
            os.close(lock)
            return None
        time.sleep(0.005 if after else 0.05)


def _main_thread_gone(pid: int) -> bool:
    """Whether the main thread of process pid has ended (the process may linger on)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in (b"Z", b"X")


def _wait_as_spare() -> int | None:
    """The holder's spare, loaded: say so on stdin (a socket to the holder) and wait there for
    the word, the pid of the daemon to succeed (as --after takes it); None at EOF, the holder
    not needing this one any more."""
    from pidns.view import lxcfs  # noqa: F401 - loaded ahead too, for views of LXCFS's layout

    with contextlib.suppress(OSError):
        os.write(0, b"loaded\n")
    line = sys.stdin.buffer.readline()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    try:
        return int(line)
    except ValueError:
        return None


def _start_successor(ready: int) -> int:
    """A new daemon (this code as installed now: an upgrade) that takes over from this one; it
    writes to `ready` once loaded, then waits for this daemon to leave."""
    child = subprocess.Popen(
        [*holding.SUCCESSOR, "--after", str(os.getpid()), "--ready-fd", str(ready)],
        executable="/proc/self/exe",
        stdin=subprocess.DEVNULL,
        stdout=open(state.state_dir() / "daemon.log", "ab"),  # noqa: SIM115 - the child's
        stderr=subprocess.STDOUT,
        start_new_session=True,
        pass_fds=[ready],
    )
    return child.pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pidns-daemon")
    parser.add_argument("--foreground", action="store_true")
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--takeover", action="store_true", help="started to succeed a daemon")
    parser.add_argument("--after", type=int, default=0, help="the daemon this one succeeds")
    parser.add_argument("--ready-fd", type=int, default=-1, help="written to once loaded")
    parser.add_argument(
        "--spare", action="store_true", help="once loaded, read the pid to succeed from stdin"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
    )
    import faulthandler

    faulthandler.register(signal.SIGUSR1)  # every thread's stack to daemon.log, for a stuck one
    held.keep_open()  # the host's and cgroups' files virtualised files are rendered from
    if args.spare:
        after = _wait_as_spare()
        if after is None:
            return 0  # not needed after all
        args.takeover, args.after = True, after
    base = state.state_dir()
    sock_path = state.socket_path()
    if args.ready_fd >= 0:
        with contextlib.suppress(OSError):
            os.write(args.ready_fd, b"1")
        os.close(args.ready_fd)
    lock = _take_lock(str(base), str(sock_path), args.after if args.takeover else None)
    if lock is None:
        return 0  # another daemon serves this user
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old_mask = os.umask(0o177)
    try:
        listener.bind(str(sock_path))
    finally:
        os.umask(old_mask)
    os.chmod(sock_path, 0o600)
    listener.listen(64)
    sock_ino = os.stat(sock_path).st_ino
    _raise_fd_limit()
    daemon = Daemon()
    daemon.watcher.start()
    try:
        daemon.holder = holding.attach(stuck_after=_stuck_after(daemon.request_timeout))
        daemon.generation = daemon.holder.generation
    except OSError as err:
        log.warning("%s: views will not survive this daemon", err)
    else:
        threading.Thread(target=daemon.beat, name="holder-beat", daemon=True).start()
    taken = daemon.take_over()
    if taken:
        log.info("generation %d: took over %d views", daemon.generation, taken)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: daemon.stop.set())
    (base / "daemon.pid").write_text(
        json.dumps({"pid": os.getpid(), "generation": daemon.generation})
    )
    try:
        while True:
            daemon.serve_control(listener)
            if not daemon.restart:
                break
            if _restart(daemon, listener):
                os._exit(0)  # the views are the successor's: nothing of them may be undone here
            daemon.restart = False
            daemon.stop.clear()
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


def _restart(daemon: Daemon, listener: socket.socket) -> bool:
    """Hand every view over to a new daemon; False (and this one serves on) when none starts."""
    import select

    ready_r, ready_w = os.pipe()
    try:
        successor = _start_successor(ready_w)
    except OSError as err:
        log.error("restart: cannot start a successor: %s", err)
        os.close(ready_r)
        os.close(ready_w)
        return False
    os.close(ready_w)
    try:
        # poll, not select: a daemon with many views or passthrough slots has fds past FD_SETSIZE
        poller = select.poll()
        poller.register(ready_r, select.POLLIN)
        loaded = bool(poller.poll(30_000)) and os.read(ready_r, 1) == b"1"
    finally:
        os.close(ready_r)
    if not loaded:
        log.error("restart: the successor %d did not load; serving on", successor)
        with contextlib.suppress(OSError):
            os.kill(successor, signal.SIGKILL)
        return False
    log.info("restart: handing over to %d", successor)
    daemon.hand_over(successor)
    listener.close()
    return True


def _raise_fd_limit() -> None:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    sys.exit(main())
