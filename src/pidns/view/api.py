"""Open and close views: the one function other commands call (`run --view`, `exec --backend`).

handle = open_view("@1234", "/mnt/p", backend="fuse")
...
handle.close()
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from pidns.designators import open_designated
from pidns.errors import (
    NamespaceGone,
    NotPermitted,
    PidnsError,
    Unsupported,
    UsageError,
    from_oserror,
)
from pidns.kernel import nsfs, syscalls
from pidns.procfs.parse import stat_state
from pidns.view import control, state
from pidns.view.mountsys import is_mountpoint, mount_fstype
from pidns.view.options import BACKENDS, Hidepid, ViewOptions

_FUSE_FSTYPE = "fuse.pidns"
FUSE_BACKENDS = ("fuse", "lxcfs")  # what the daemon serves: views, and `pidns lxcfs` trees


@dataclass
class ViewHandle:
    mountpoint: str
    backend: str
    ns: int
    daemon_pid: int | None = None
    view_id: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # --virtualize (FUSE): the view's directory of the sysfs files it renders
    # (devices/system/cpu/online), unlisted in its root; None for none
    sys_dir: str | None = None

    def close(self) -> None:
        close_view(self.mountpoint)

    def __enter__(self) -> ViewHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# What a FUSE mount whose server died answers: "Transport endpoint is not connected" (or aborted).
DISCONNECTED = (errno.ENOTCONN, errno.ECONNABORTED)


def disconnected(path: str) -> bool:
    """Whether path is a pidns FUSE view whose daemon is gone (every access fails ENOTCONN)."""
    try:
        os.statvfs(path)  # always asks the server (a stat may be answered from cached attributes)
    except OSError as err:
        return err.errno in DISCONNECTED and mount_fstype(path) == _FUSE_FSTYPE
    return False


def _detach(path: str) -> None:
    """Lazily unmount a dead view: a non-lazy unmount of it may be refused while a reader still
    holds a file of it, and nothing can be read through it any more anyway."""
    from pidns.kernel import fuse_mount

    fuse_mount.unmount_quietly(path)
    state.forget(path)


def check_mountpoint(mountpoint: str) -> str:
    path = os.path.abspath(mountpoint)
    if disconnected(path):
        _detach(path)  # a view left by a daemon that died: mounting over it recovers it
    if not os.path.exists(path):
        raise UsageError(f"{mountpoint}: no such directory (create it first)")
    if not os.path.isdir(path):
        raise UsageError(f"{mountpoint}: not a directory (a view mounts on a directory)")
    if state.lookup(path) is not None and is_mountpoint(path):
        raise PidnsError(
            f"{mountpoint}: already a view (see 'pidns mounts'; 'pidns umount {mountpoint}' first)"
        )
    if is_mountpoint(path):
        raise PidnsError(
            f"{mountpoint}: busy: something is already mounted there (choose an empty directory)"
        )
    return path


def open_view(
    ns: str | int,
    mountpoint: str,
    backend: str = "auto",
    hidepid: str = "off",
    gid: int | None = None,
    subset_pid: bool = False,
    allow_other: bool = False,
    virtualize: bool = False,
    auto_unmount: bool = False,
    cpus_from_quota: bool = False,
) -> ViewHandle:
    """Mount ns's proc tree at mountpoint and return once it answers. Nothing stays mounted on error.

    virtualize: the resource files (meminfo, cpuinfo, stat, uptime, loadavg, swaps, diskstats,
    pressure/*) show the cgroup of NS's init; cpus_from_quota: as many CPUs as its CFS quota lets
    run at once."""
    if backend not in BACKENDS:
        raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    try:
        options = ViewOptions(
            Hidepid.parse(hidepid),
            gid,
            subset_pid,
            allow_other,
            virtualize,
            os.geteuid(),
            cpus_from_quota=cpus_from_quota,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    if cpus_from_quota and not virtualize:
        raise UsageError("--cpus-from-quota needs --virtualize")
    path = check_mountpoint(mountpoint)
    fd = open_designated(ns)
    try:
        ino = nsfs.identity(fd).ino
        if nsfs.nstype(fd) != nsfs.CLONE_NEWPID:
            raise UsageError(f"{ns!r}: not a PID namespace")
        if not _has_init(fd):
            raise NamespaceGone(f"{ns!r}: pid:[{ino}] has no live init (the namespace is dead)")
        if virtualize:
            check_own_cgroup(fd, ns, ino)
        if backend == "auto":
            backend = "kernel" if os.geteuid() == 0 and not virtualize else "fuse"
        if backend == "kernel":
            if virtualize:  # the hybrid: the kernel's procfs, the virtualised files pidns's
                _mount_hybrid(fd, path, options, cpus_from_quota)
            else:
                from pidns.view.kernel import mount_proc

                mount_proc(fd, path, options)
            handle = ViewHandle(path, "kernel", ino, options=options.to_wire())
        else:
            handle = _open_fuse(fd, path, options, auto_unmount)
    finally:
        os.close(fd)
    state.record(
        path,
        {
            "backend": handle.backend,
            "ns": ino,
            "daemon_pid": handle.daemon_pid,
            "view": handle.view_id,
            "options": handle.options,
        },
    )
    return handle


def check_own_cgroup(fd: int, ns: str | int, ino: int) -> None:
    """--virtualize shows the cgroup of NS's init: refuse one whose init is in the root cgroup of
    every hierarchy (the host's own: there is nothing of its own to show)."""
    from pidns.view.resources import system

    try:
        cgroup = system().of_pid(nsfs.pid_from_pidns(fd, 1))
    except OSError as err:
        raise NamespaceGone(
            f"{ns!r}: pid:[{ino}]: its init's cgroup cannot be read ({err.strerror})"
        ) from None
    if cgroup.at_root():
        raise UsageError(
            f"{ns!r}: pid:[{ino}] has no cgroup of its own (its init is in the root cgroup): "
            "--virtualize would show the host's values; give it one (pidns run --memory …) "
            "or drop --virtualize"
        )


def _has_init(fd: int) -> bool:
    """Whether the namespace's init still runs (an exited init may linger as a zombie)."""
    try:
        host = nsfs.pid_from_pidns(fd, 1)
        with open(f"/proc/{host}/stat", "rb") as f:
            return stat_state(f.read()) not in ("Z", "X")
    except (OSError, ValueError):
        return False


def fuse_missing() -> str | None:
    try:
        device = os.stat("/dev/fuse")
    except OSError:
        return "/dev/fuse is missing (load the fuse module or use --backend kernel)"
    if not stat.S_ISCHR(device.st_mode):
        return "/dev/fuse is not the FUSE device (not a character device); use --backend kernel"
    if os.geteuid() != 0:  # the setuid helper opens the device
        return (
            None
            if shutil.which("fusermount3")
            else "fusermount3 is missing (apt-get install fuse3)"
        )
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC))
    except OSError as err:
        return f"/dev/fuse cannot be opened ({err.strerror}); use --backend kernel"
    return None


def _open_fuse(fd: int, path: str, options: ViewOptions, auto_unmount: bool) -> ViewHandle:
    """Mount here (in this process's mount namespace), then hand the connection to the daemon."""
    from pidns.kernel import fuse_mount

    missing = fuse_missing()
    if missing:
        raise Unsupported(f"{path}: FUSE is not available: {missing}")
    message = {
        "op": "open",
        "mountpoint": path,
        "auto_unmount": auto_unmount,
        "options": options.to_wire(),
    }
    try:
        fuse_fd = fuse_mount.mount(path, allow_other=options.allow_other)
    except fuse_mount.MountError as err:
        raise PidnsError(f"{path}: cannot mount the view: {err.strerror}") from None
    try:
        ensure_daemon()  # only now: a mount that fails leaves no daemon behind
        mnt_fd = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        try:
            reply = _send_open(message, [fd, fuse_fd, mnt_fd])
        finally:
            os.close(mnt_fd)
    except BaseException:
        os.close(fuse_fd)
        fuse_mount.unmount_quietly(path)
        raise
    os.close(fuse_fd)  # the daemon holds the connection now
    if not reply.get("ok"):
        fuse_mount.unmount_quietly(path)
        raise PidnsError(f"{path}: the view daemon refused: {reply.get('error')}")
    try:
        os.lstat(os.path.join(path, "self"))  # answering
    except OSError as err:
        fuse_mount.unmount_quietly(path)
        raise PidnsError(f"{path}: the view does not answer: {err.strerror}") from None
    sys_name = str(reply.get("sys") or "")
    return ViewHandle(
        path,
        "fuse",
        int(reply["ns"]),
        int(reply["pid"]),
        str(reply["view"]),
        options.to_wire(),
        sys_dir=os.path.join(path, sys_name) if sys_name else None,
    )


def open_lxcfs(mountpoint: str, cpus_from_quota: bool = False) -> ViewHandle:
    """Mount an LXCFS-compatible tree at mountpoint (proc/{meminfo,cpuinfo,stat,uptime,loadavg,
    swaps,diskstats}, sys/devices/system/cpu/online) where each reader sees its own cgroup's
    values; readable by every user. Returns once it answers; nothing stays mounted on error."""
    from pidns.kernel import fuse_mount

    path = check_mountpoint(mountpoint)
    missing = fuse_missing()
    if missing:
        raise Unsupported(f"{path}: FUSE is not available: {missing}")
    if os.geteuid() != 0 and not _user_allow_other():
        raise NotPermitted(
            f"{mountpoint}: a tree every user reads needs allow_other: as root, or with "
            "user_allow_other in /etc/fuse.conf"
        )
    try:
        fuse_fd = fuse_mount.mount(path, allow_other=True)
    except fuse_mount.MountError as err:
        raise PidnsError(f"{path}: cannot mount the tree: {err.strerror}") from None
    message = {"op": "lxcfs", "mountpoint": path, "cpus_from_quota": cpus_from_quota}
    try:
        ensure_daemon()
        reply = _send_open(message, [fuse_fd])
    except BaseException:
        os.close(fuse_fd)
        fuse_mount.unmount_quietly(path)
        raise
    os.close(fuse_fd)
    if not reply.get("ok"):
        fuse_mount.unmount_quietly(path)
        raise PidnsError(f"{path}: the view daemon refused: {reply.get('error')}")
    try:
        os.lstat(os.path.join(path, "proc", "meminfo"))  # answering
    except OSError as err:
        fuse_mount.unmount_quietly(path)
        raise PidnsError(f"{path}: the tree does not answer: {err.strerror}") from None
    options = {"cpus_from_quota": cpus_from_quota}
    handle = ViewHandle(path, "lxcfs", 0, int(reply["pid"]), str(reply["view"]), options)
    state.record(
        path,
        {
            "backend": "lxcfs",
            "ns": 0,
            "daemon_pid": handle.daemon_pid,
            "view": handle.view_id,
            "options": options,
        },
    )
    return handle


def _user_allow_other() -> bool:
    try:
        with open("/etc/fuse.conf") as f:
            return any(line.split("#", 1)[0].strip() == "user_allow_other" for line in f)
    except OSError:
        return False


def _send_open(message: dict[str, Any], fds: list[int]) -> dict[str, Any]:
    """The open request; once more with a fresh daemon if the one asked was just leaving."""
    sock = str(state.socket_path())
    try:
        reply = control.request(sock, message, fds=fds)
    except OSError:
        reply = {"ok": False, "error": "no reply"}
    if reply.get("error") == "no reply":
        ensure_daemon()
        reply = control.request(sock, message, fds=fds)
    return reply


def ensure_daemon(timeout: float = 10.0) -> int:
    """The pid of this user's daemon, started in the background when none answers."""
    sock = str(state.socket_path())
    with contextlib.suppress(OSError):
        return int(control.request(sock, {"op": "ping"}, timeout=2)["pid"])
    log = open(state.state_dir() / "daemon.log", "ab")  # noqa: SIM115 - handed to the child
    # Started from a short-lived intermediate, so that the daemon is not this process's child: a
    # long-running caller (run --view, a library user) would otherwise keep it as a zombie.
    middle = os.fork()
    if middle == 0:
        code = 1
        try:
            # Through /proc/self/exe: this interpreter may sit where the user cannot reach it by
            # path (root's interpreter, run by a user it switched to); argv[0] still finds its
            # environment.
            subprocess.Popen(
                [sys.executable, "-m", "pidns.view.daemon"],
                executable="/proc/self/exe",
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
            code = 0
        finally:
            os._exit(code)
    log.close()
    os.waitpid(middle, 0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            return int(control.request(sock, {"op": "ping"}, timeout=2)["pid"])
        time.sleep(0.02)
    tail = (state.state_dir() / "daemon.log").read_bytes()[-400:].decode(errors="replace").strip()
    raise PidnsError(
        f"the view daemon did not start (see {state.state_dir()}/daemon.log): {tail[-200:]}"
    )


def close_view(mountpoint: str, lazy: bool = False) -> None:
    """Unmount a view made by open_view (its daemon notices and drops the view); `lazy`: detach
    it even while in use (it goes once unused)."""
    path = os.path.abspath(mountpoint)
    rec = state.lookup(path)
    if disconnected(path):
        _detach(path)  # its daemon died ("Transport endpoint is not connected")
        return
    if rec is None or not is_mountpoint(path):
        fstype = mount_fstype(path) if os.path.exists(path) else None
        state.forget(path)
        raise UsageError(
            f"{mountpoint}: not a view made by 'pidns mount'"
            + (f" (a mount of type {fstype} is there)" if fstype else " (see 'pidns mounts')")
        )
    try:
        if rec.get("backend") in FUSE_BACKENDS:
            from pidns.kernel import fuse_mount

            fuse_mount.unmount(path, lazy=lazy)
        elif (rec.get("options") or {}).get("virtualize"):
            from pidns.view.hybrid import unmount_hybrid

            unmount_hybrid(path)
        else:
            syscalls.umount2(path, 0)
    except OSError as err:
        if err.errno == errno.EBUSY:
            raise PidnsError(
                f"{mountpoint}: busy (a process uses the view; close it or retry)"
            ) from None
        raise from_oserror(err, mountpoint) from None
    state.forget(path)


def list_views() -> list[dict[str, Any]]:
    """The recorded views, each with `state` (alive; ns-dead: its namespace's init died, it shows
    only self and thread-self; disconnected: its daemon is gone, every access fails ENOTCONN;
    unresponsive: the daemon does not answer) and `alive` (state == alive); a served FUSE view
    also has `fuse`: the requests its connection read by operation, and what passthrough did."""
    views = state.records()
    served: dict[str, dict[str, Any]] | None = None
    daemon: dict[str, Any] = {}
    if any(v.get("backend") in FUSE_BACKENDS for v in views):
        served = _served_views(daemon)
    for v in views:
        # The daemon is asked, not the mount: a stat of a view whose daemon hangs would hang too.
        if v.get("backend") not in FUSE_BACKENDS:
            v["state"] = "alive"
        elif served is None:
            v["state"] = "unresponsive"
        elif (key := f"{v.get('daemon_pid')}:{v.get('view')}") not in served:
            v["state"] = "disconnected"  # no daemon, or a new one that does not serve this mount
        else:
            v["state"] = "ns-dead" if served[key].get("dead") else "alive"
            v["daemon"] = daemon  # pid, start time (s since the epoch), generation
            v["fuse"] = served[key].get("fuse", {})  # requests by operation, passthrough
        v["alive"] = v["state"] == "alive"
    return views


def _served_views(daemon: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The views this user's daemon serves, by "daemon pid:view id" (a daemon that takes a view
    over rewrites its record with its own pid); {} when no daemon runs, None when it does not
    answer. Fills `daemon` with the daemon's pid, start time and generation."""
    try:
        reply = control.request(str(state.socket_path()), {"op": "list"}, timeout=2)
    except (ConnectionRefusedError, FileNotFoundError):
        return {}
    except (OSError, ValueError):
        return None
    daemon.update(
        pid=reply.get("pid"), started=reply.get("started"), generation=reply.get("generation")
    )
    return {f"{reply.get('pid')}:{v['view']}": v for v in reply.get("views", [])}


def daemon_status() -> dict[str, Any] | None:
    """This user's view daemon: pid, start time, generation (how many daemons its views have
    had), its views, the holder that keeps them and the spare successor it keeps ready (0:
    none); None when no daemon runs."""
    try:
        reply = control.request(str(state.socket_path()), {"op": "status"}, timeout=5)
    except (ConnectionRefusedError, FileNotFoundError):
        return None
    except (OSError, ValueError) as err:
        raise PidnsError(f"the view daemon does not answer ({err})") from None
    if not reply.get("ok"):
        raise PidnsError(f"the view daemon refused: {reply.get('error')}")
    from pidns.view import holding

    reply["spare"] = int((holding.status() or {}).get("spare") or 0)
    return reply


def restart_daemon(timeout: float = 30.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Replace this user's view daemon by a new one running the code installed now, which takes
    over every view; (the old status, the new). PidnsError when no daemon runs or none takes over."""
    old = daemon_status()
    if old is None:
        raise PidnsError("no view daemon runs (nothing to restart)")
    sock = str(state.socket_path())
    reply = control.request(sock, {"op": "restart"}, timeout=5)
    if not reply.get("ok"):
        raise PidnsError(f"the view daemon refused to restart: {reply.get('error')}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, PidnsError):
            new = daemon_status()
            if new is not None and new.get("pid") != old.get("pid"):
                return old, new
        time.sleep(0.02)
    raise PidnsError(f"no new view daemon answered within {timeout:.0f} s (see daemon.log)")


class VirtualFiles:
    """A FUSE view of a namespace with --virtualize at a private temporary directory: its
    virtualised /proc files (`path`) and sysfs files (`sys_dir`) for binding elsewhere."""

    def __init__(self, ns: str | int, cpus_from_quota: bool = False) -> None:
        self.path = tempfile.mkdtemp(prefix="pidns-virtual-")
        try:
            self.handle = open_view(
                ns, self.path, backend="fuse", virtualize=True, cpus_from_quota=cpus_from_quota
            )
        except BaseException:
            os.rmdir(self.path)
            raise
        self.sys_dir = self.handle.sys_dir

    def close(self) -> None:
        """Unmount the temporary view and its directory (binds made from it stay). Lazily: a
        failed unmount (busy for a moment) would leave it mounted, the failure unseen."""
        try:
            with contextlib.suppress(PidnsError):
                close_view(self.handle.mountpoint, lazy=True)
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(self.path)


def _mount_hybrid(ns_fd: int, mountpoint: str, options: ViewOptions, cpus_from_quota: bool) -> None:
    """`pidns mount --backend kernel --virtualize`: NS's procfs at mountpoint, the virtualised
    files bound over it. Nothing stays mounted on error."""
    from pidns.view.hybrid import bind_over, present, unmount_hybrid
    from pidns.view.kernel import mount_proc

    mount_proc(ns_fd, mountpoint, options)
    try:
        files = VirtualFiles(ns_fd, cpus_from_quota)
        try:
            bind_over(files.path, mountpoint, present(mountpoint))
        finally:
            files.close()
    except BaseException as err:
        with contextlib.suppress(OSError):
            unmount_hybrid(mountpoint)
        if isinstance(err, OSError):
            raise PidnsError(
                f"{mountpoint}: binding the virtualised files failed: {err.strerror}"
            ) from None
        raise
