"""Who may see a task in a view: the rules of rules.py applied to credentials read from /proc.

A task's credentials are read from its directory (through the fd a node pinned, or by its pid
under the view's /proc fd for a listing), so the check and the content describe the same task.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from pidns.fuse.node import Requester
from pidns.procfs.parse import parse_status_ids
from pidns.procfs.reader import read_at
from pidns.view import rules
from pidns.view.options import Hidepid, ViewOptions
from pidns.view.rules import Creds


def creds_at(dir_fd: int, rel: str = ".") -> Creds:
    """The credentials of the task whose /proc directory is rel under dir_fd. OSError when it is
    gone, ValueError when its status was cut short as it died."""
    uids, gids = parse_status_ids(read_at(dir_fd, f"{rel}/status"))
    # A task's files belong to root when it is not dumpable (docs/kernel-proc.md §26).
    owner = os.stat(rel, dir_fd=dir_fd).st_uid
    return Creds(uids, gids, dumpable=owner == uids[1])


def with_groups(opts: ViewOptions, req: Requester) -> Requester:
    """req with its supplementary groups, when gid= makes them matter."""
    if opts.gid is None or req.groups or not req.tid:
        return req
    try:
        with open(f"/proc/{req.tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Groups:"):
                    groups = tuple(int(g) for g in line[7:].split())
                    return Requester(req.tid, req.uid, req.gid, groups)
    except OSError:
        pass
    return req


def visible(opts: ViewOptions, req: Requester, creds: Callable[[], Creds | None]) -> bool:
    """Whether req sees the task at all (listed and found): hidepid=invisible|ptraceable hide.
    creds is asked only when the options make it matter (None: the task is gone)."""
    if opts.hidepid in (Hidepid.OFF, Hidepid.NOACCESS) or req.uid == 0:
        return True
    found = creds()
    if found is None:
        return False
    return rules.pid_access(opts, with_groups(opts, req), found) != errno.ENOENT


def pid_errno(opts: ViewOptions, req: Requester, creds: Callable[[], Creds]) -> int:
    """0 when req may enter the task's directory, else the kernel's errno (hidepid)."""
    if opts.hidepid == Hidepid.OFF or req.uid == 0:
        return 0
    return rules.pid_access(opts, with_groups(opts, req), creds())


def task_creds_or_none(proc_fd: int, host_pid: int) -> Creds | None:
    try:
        return creds_at(proc_fd, str(host_pid))
    except (OSError, ValueError):
        return None
