"""The per-user daemon: one pyfuse3 session (the hub) serving every view of the user.

pyfuse3 serves one mount per process, so the hub holds a directory per view and `pidns mount` binds
that directory where the user asked. Views of one namespace share its instance; the registry knows
every view, which is what lets one exit be flushed from all of them.

    python -m pidns.view.daemon [--foreground]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
from typing import Any

import pyfuse3
import trio

from pidns.errors import PidnsError
from pidns.kernel import syscalls
from pidns.view import control, state
from pidns.view.fuse import Adapter
from pidns.view.instances import Instance, Registry, View
from pidns.view.mountsys import MNT_DETACH
from pidns.view.nodes import Hub
from pidns.view.options import Hidepid, ViewOptions
from pidns.view.watch import Watcher

log = logging.getLogger("pidns.daemon")


class Daemon:
    def __init__(self) -> None:
        self.registry = Registry()
        self.adapter = Adapter(Hub(self.registry.views))
        self.watcher = Watcher(self.registry, self.adapter.flush_task)
        self.watcher.on_dead = self._on_dead  # type: ignore[method-assign]
        self.auto_unmount: set[str] = set()
        self.stop = trio.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    def _on_dead(self, instance: object) -> None:
        assert isinstance(instance, Instance)
        self.adapter.flush_instance(self.adapter.host_pids_of(instance))
        for view in list(instance.views.values()):
            if view.id in self.auto_unmount and view.mountpoint:
                with contextlib.suppress(OSError):
                    syscalls.umount2(view.mountpoint, MNT_DETACH)
                state.forget(view.mountpoint)
                self.registry.close_view(view.id)
        self._maybe_stop()

    def _maybe_stop(self) -> None:
        if not self.registry.views:
            self.stop.set()

    # -- control requests ----------------------------------------------------------------------

    def handle(self, message: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        op = message.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid(), "watch": self.watcher.mode}
        if op == "open":
            if len(fds) != 1:
                return {"ok": False, "error": "open needs one nsfs fd"}
            opts = message.get("options", {})
            options = ViewOptions(
                hidepid=Hidepid.parse(str(opts.get("hidepid", "off"))),
                gid=opts.get("gid"),
                subset_pid=bool(opts.get("subset_pid")),
                allow_other=bool(opts.get("allow_other")),
                virtualize=bool(opts.get("virtualize")),
                owner_uid=int(opts.get("owner_uid", 0)),
            )
            try:
                view = self.registry.open_view(fds.pop(), options, str(message.get("mountpoint", "")))
            except PidnsError as err:
                return {"ok": False, "error": str(err)}
            if message.get("auto_unmount"):
                self.auto_unmount.add(view.id)
            self.watcher.watch(view.instance.init_host)
            return {
                "ok": True,
                "view": view.id,
                "path": str(state.hub_path() / view.id),
                "ns": view.instance.id.ino,
                "shared": len(view.instance.views) > 1,
                "pid": os.getpid(),
            }
        if op == "close":
            self.registry.close_view(str(message.get("view")))
            self.auto_unmount.discard(str(message.get("view")))
            self._maybe_stop()
            return {"ok": True}
        if op == "list":
            return {"ok": True, "views": [self._describe(v) for v in self.registry.views.values()]}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def _describe(self, view: View) -> dict[str, Any]:
        return {
            "view": view.id,
            "mountpoint": view.mountpoint,
            "ns": view.instance.id.ino,
            "dead": view.instance.dead,
            "instance_views": sorted(view.instance.views),
            "options": view.options.describe(),
        }

    async def serve_control(self, listener: socket.socket) -> None:
        while True:
            await trio.lowlevel.wait_readable(listener)
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                continue
            with conn:
                conn.setblocking(False)
                with trio.move_on_after(5):
                    await trio.lowlevel.wait_readable(conn)
                    fds: list[int] = []
                    try:
                        conn.setblocking(True)
                        conn.settimeout(2)
                        message, fds = control.receive(conn)
                        reply = self.handle(message, fds)
                    except Exception as err:  # a bad client must not stop the daemon
                        log.exception("control request failed")
                        reply = {"ok": False, "error": str(err)}
                    finally:
                        for fd in fds:
                            os.close(fd)
                    with contextlib.suppress(OSError):
                        conn.sendall(control.encode(reply))

    async def run(self, listener: socket.socket) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._fuse_main, nursery)
            nursery.start_soon(self.watcher.run)
            nursery.start_soon(self.serve_control, listener)
            await self.stop.wait()
            nursery.cancel_scope.cancel()

    async def _fuse_main(self, nursery: trio.Nursery) -> None:
        # One worker: handlers never await, so more workers only add scheduling cost.
        await pyfuse3.main(min_tasks=1, max_tasks=1)
        self.stop.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pidns-daemon")
    parser.add_argument("--foreground", action="store_true")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s")
    base = state.state_dir()
    lock = os.open(base / "daemon.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another daemon serves this user
    hub = state.hub_path()
    with contextlib.suppress(OSError):
        syscalls.umount2(str(hub), MNT_DETACH)  # left by a daemon that died
    hub.mkdir(mode=0o700, exist_ok=True)
    sock_path = state.socket_path()
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    listener.bind(str(sock_path))
    os.chmod(sock_path, 0o600)
    listener.listen(16)
    listener.setblocking(False)
    _raise_fd_limit()
    daemon = Daemon()
    options = {"fsname=pidns", "subtype=pidns", "ro", "default_permissions", "nosuid", "nodev", "noexec"}
    if os.geteuid() == 0:
        options.add("allow_other")  # each view admits users by its own --allow-other
    pyfuse3.init(daemon.adapter, str(hub), options)
    (base / "daemon.pid").write_text(json.dumps({"pid": os.getpid()}))
    try:
        trio.run(daemon.run, listener)
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
        pyfuse3.close(unmount=True)
        daemon.registry.close()
        with contextlib.suppress(FileNotFoundError):
            (base / "daemon.pid").unlink()
    return 0


def _raise_fd_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    del soft


if __name__ == "__main__":
    sys.exit(main())
