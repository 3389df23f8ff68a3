"""What a namespace's proc tree contains for one requester: pure rules, no I/O.

The kernel's rules (docs/kernel-proc.md) as functions of data the caller has already read: the
order of the root listing, hidepid/gid/subset, and which per-task entries need ptrace-read access.
Which files are rendered rather than passed through is the table in served.py.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pidns.fuse.node import Requester
from pidns.view.options import Hidepid, ViewOptions

SELF = "self"
THREAD_SELF = "thread-self"

# Per-task entries the kernel guards with a ptrace-read check (docs/kernel-proc.md §25).
PTRACE_READ_FILES = frozenset(
    {
        "environ",
        "auxv",
        "io",
        "mem",
        "pagemap",
        "syscall",
        "stack",
        "maps",
        "smaps",
        "smaps_rollup",
        "numa_maps",
        "personality",
    }
)
PTRACE_READ_LINKS = frozenset({"cwd", "root", "exe"})
PTRACE_READ_DIRS = frozenset({"fd", "map_files"})
# Directories whose entries list and stat freely but whose links read only with ptrace-read
# (proc_ns_readlink: ns/pid of another user's task is EACCES, docs/kernel-proc.md §17).
PTRACE_READ_LINK_DIRS = frozenset({"ns"})
PID_MAX_LIMIT = 4 * 1024 * 1024  # the kernel's highest possible pid (64-bit)

# readdir cookies: fixed names count from 1, pids sit above this so they never collide. Every
# cookie stays below 2**31, as procfs's directory positions do (its s_maxbytes is MAX_NON_LFS).
PID_COOKIE_BASE = 1 << 24


@dataclass(slots=True, frozen=True)
class Creds:
    """A task's credentials as its host status shows them, plus whether its files are its own."""

    uids: tuple[int, int, int, int]  # real, effective, saved, fs
    gids: tuple[int, int, int, int]
    dumpable: bool


def may_ptrace_read(req: Requester, task: Creds) -> bool:
    """The kernel's __ptrace_may_access for PTRACE_MODE_READ_FSCREDS, for requesters in the daemon's
    user namespace: root (CAP_SYS_PTRACE) always; otherwise fsuid/fsgid must match the task's real,
    effective and saved ids, and the task must be dumpable."""
    if req.uid == 0:
        return True
    uids_match = all(u == req.uid for u in task.uids[:3])
    gids_match = all(g == req.gid for g in task.gids[:3])
    return uids_match and gids_match and task.dumpable


def pid_access(opts: ViewOptions, req: Requester, task: Creds) -> int:
    """0 when req may see the task's directory under opts; else the errno the kernel answers.

    ENOENT means hidden (not listed either), EPERM listed but closed (hidepid=noaccess).
    """
    if opts.hidepid == Hidepid.OFF:
        return 0
    if opts.hidepid == Hidepid.PTRACEABLE:
        return 0 if may_ptrace_read(req, task) else errno.ENOENT
    if opts.gid is not None and (req.gid == opts.gid or opts.gid in req.groups):
        return 0
    if may_ptrace_read(req, task):
        return 0
    return errno.ENOENT if opts.hidepid == Hidepid.INVISIBLE else errno.EPERM


def admits(opts: ViewOptions, req: Requester) -> bool:
    """Without allow_other only the mounting user (and root) may enter a view, as FUSE does."""
    return opts.allow_other or req.uid == opts.owner_uid or req.uid == 0


def top_level_names(host_names: Iterable[str], opts: ViewOptions) -> list[str]:
    """The fixed entries, in the host's readdir order, without pids, self and thread-self."""
    if opts.subset_pid:
        return []
    return [n for n in host_names if not n.isdigit() and n not in (SELF, THREAD_SELF)]


def root_listing(fixed: Sequence[str], pids: Sequence[int]) -> list[tuple[int, str]]:
    """(cookie, name) in the kernel's order: fixed entries, self, thread-self, pids ascending."""
    entries = [(i + 1, name) for i, name in enumerate(fixed)]
    entries.append((len(fixed) + 1, SELF))
    entries.append((len(fixed) + 2, THREAD_SELF))
    entries.extend((PID_COOKIE_BASE + pid, str(pid)) for pid in sorted(pids))
    return entries


def pid_of_name(name: str) -> int | None:
    """The pid a directory name designates, as the kernel's name_to_int reads it: ASCII decimal
    digits without a leading zero, below PID_MAX_LIMIT. None for anything else ("01", "+1",
    Arabic-Indic or superscript digits, 2**64): such names never reach a task, and must not be passed through to the host's /proc
    either."""
    if not (name.isascii() and name.isdigit()) or (len(name) > 1 and name[0] == "0"):
        return None
    if len(name) > 8:  # PID_MAX_LIMIT (2**22) has 7 digits: no int() of a huge name
        return None
    pid = int(name)
    return pid if 0 < pid <= PID_MAX_LIMIT else None


def numeric(name: str) -> bool:
    """A name the kernel would parse as a number (valid pid or not): never a passed-through entry."""
    return name.isascii() and name.isdigit()


def self_target(tgid: int) -> str | None:
    """`self` points at the reader's tgid in the namespace; None (dangling) when it has none."""
    return str(tgid) if tgid > 0 else None


def thread_self_target(tgid: int, tid: int) -> str | None:
    return f"{tgid}/task/{tid}" if tgid > 0 and tid > 0 else None


def task_entry_errno(name: str, req: Requester, task: Creds) -> int:
    """0 when req may open the per-task entry `name`; EACCES where the kernel checks ptrace-read."""
    if name in PTRACE_READ_FILES or name in PTRACE_READ_LINKS or name in PTRACE_READ_DIRS:
        return 0 if may_ptrace_read(req, task) else errno.EACCES
    return 0
