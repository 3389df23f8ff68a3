"""Namespace designators: the words every `--ns` accepts. The one resolver: every command and the
Python API come here.

4026532241 | pid:[4026532241]   a namespace inode
@PID                            the namespace of pid PID (as the snapshot's proc tree numbers it)
/path/to/nsfs/file              /proc/PID/ns/pid or a bind mount of one
host                            the namespace that owns the proc tree (the initial one on the host)
NAME                            a namespace registered by `pidns run --name`
docker:NAME, k8s:NS/POD, ...    a container's (pidns.containers: cgroups and runtime state files)
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable

from pidns.errors import BadDesignator, PidnsError, UsageError, from_oserror
from pidns.kernel import nsfs
from pidns.model import PidNamespace, Snapshot


def _container(text: str, proc: str) -> int:
    from pidns.containers import resolve_designator  # its import costs: only when one is named

    ino = resolve_designator(text, proc)
    if ino is None:  # PREFIXES and the containers' own list disagree
        raise BadDesignator(f"{text!r}: not a container designator")
    return ino


# PREFIX -> resolver of a designator `PREFIX:REST` (the whole text, and the proc tree it reads) to
# a namespace inode. A new kind of designator is one entry here; BadDesignator (exit 2) for what
# names nothing, another PidnsError (exit 1) for what can't be reached now.
PREFIXES: dict[str, Callable[[str, str], int]] = {
    kind: _container
    for kind in ("docker", "podman", "containerd", "crio", "k8s", "k8s-pod", "machine", "lxc")
}
PREFIXES["cgroup"] = _container

_INODE = re.compile(r"(?:pid:\[)?(\d+)\]?")
_HINT = (
    "use an inode, pid:[inode], @PID, an nsfs path, 'host', a registered name or a container"
    " (docker:NAME, podman:NAME, k8s:NS/POD, ...; see 'pidns ls')"
)


def _registered(name: str) -> int | None:
    from pidns.names import lookup_inode  # only when a name is actually used

    return lookup_inode(name)


def resolve(text: str, snap: Snapshot) -> PidNamespace:
    """The namespace `text` designates, or BadDesignator naming the input."""
    if text == "host" and snap.root is not None:
        return snap.namespaces[snap.root]
    ino = designated_inode(text, snap.proc)
    ns = snap.by_ino(ino)
    if ns is None:
        raise BadDesignator(
            f"{text!r}: no PID namespace with inode {ino} is visible from {snap.proc} (see 'pidns ls')"
        )
    return ns


def designated_inode(text: str, proc: str = "/proc") -> int:
    """The inode `text` designates, checked as far as possible without a snapshot."""
    if not text:
        raise BadDesignator(f"empty namespace designator: {_HINT}")
    if text == "host":
        return _topmost_inode()
    match = _INODE.fullmatch(text)
    if match and (text.isdigit() or text.startswith("pid:[")):
        return int(match.group(1))
    if text.startswith("@"):
        pid = text[1:]
        if not pid.isdigit():
            raise BadDesignator(f"{text!r}: '@' must be followed by a pid, like @1234")
        return _link_inode(f"{proc}/{pid}/ns/pid", text)
    prefix, colon, _rest = text.partition(":")
    if colon and prefix in PREFIXES:
        return PREFIXES[prefix](text, proc)
    if "/" in text:
        return _path_inode(text)
    ino = _registered(text)
    if ino is not None:
        return ino
    raise BadDesignator(f"{text!r} is not a known namespace: {_HINT}")


def _link_inode(path: str, text: str) -> int:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        raise BadDesignator(f"{text!r}: no such process (it may have exited)") from None
    except OSError as err:
        if err.errno == errno.ESRCH:
            raise BadDesignator(f"{text!r}: no such process (it may have exited)") from None
        raise from_oserror(err, text) from None


def _topmost_inode() -> int:
    """The highest namespace the caller can reach: NS_GET_PARENT from its own until EPERM."""
    fd = nsfs.open_ns("/proc/self/ns/pid")
    try:
        while True:
            try:
                parent = nsfs.parent(fd)
            except OSError:
                return nsfs.identity(fd).ino
            os.close(fd)
            fd = parent
    finally:
        os.close(fd)


def _path_inode(path: str) -> int:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BadDesignator(f"{path!r}: no such file") from None
    except OSError as err:
        raise from_oserror(err, path) from None
    if st.st_dev != nsfs.nsfs_dev():
        raise BadDesignator(f"{path!r} is not a namespace file (expected /proc/PID/ns/pid)")
    try:
        fd = nsfs.open_ns(path)
    except OSError as err:
        raise from_oserror(err, path) from None
    try:
        if nsfs.nstype(fd) != nsfs.CLONE_NEWPID:
            raise BadDesignator(f"{path!r} is a namespace file, but not of a PID namespace")
    except OSError as err:
        raise from_oserror(err, path) from None
    finally:
        os.close(fd)
    return st.st_ino


def open_namespace(snap: Snapshot, ns: PidNamespace) -> int:
    """An nsfs fd for ns, through a live member task (or a child's NS_GET_PARENT)."""
    for task in snap.tasks.values():
        if task.ns_ino != ns.id.ino:
            continue
        try:
            fd = nsfs.open_ns(f"{snap.proc}/{task.host_pid}/ns/pid")
        except OSError:
            continue
        if nsfs.identity(fd) == ns.id:
            return fd
        os.close(fd)
    for child in snap.children(ns):
        try:
            child_fd = open_namespace(snap, child)
        except PidnsError:
            continue
        try:
            fd = nsfs.parent(child_fd)
        except OSError:
            continue
        finally:
            os.close(child_fd)
        if nsfs.identity(fd) == ns.id:
            return fd
        os.close(fd)
    raise PidnsError(f"{ns.id}: cannot open the namespace file (no accessible task in it)")


def open_designated(designator: str | int, proc: str = "/proc") -> int:
    """An nsfs fd for the namespace a designator names (an fd is duplicated). @PID and nsfs paths
    are opened directly; the other forms are resolved against a snapshot of proc."""
    if isinstance(designator, int):
        return os.dup(designator)
    if designator.startswith("@") and designator[1:].isdigit():
        path = f"{proc}/{designator[1:]}/ns/pid"
        try:
            return nsfs.open_ns(path)
        except OSError as err:
            if err.errno in (errno.ENOENT, errno.ESRCH):
                raise UsageError(f"{designator!r}: no such process (it may have exited)") from None
            raise from_oserror(err, designator) from None
    if designator.startswith("/"):
        designated_inode(designator)  # checks it is a pid namespace file
        return nsfs.open_ns(designator)
    from pidns.procfs.snapshot import snapshot

    snap = snapshot(proc)
    return open_namespace(snap, resolve(designator, snap))
