"""Named namespaces: NAME -> the namespace `pidns run --name NAME` made.

One JSON file per name in the `names` directory of the user's state directory (pidns.statedir:
/run/pidns/names for root, $XDG_RUNTIME_DIR/pidns/names for others). An entry records
the host pid of the namespace's pid 1, that process's start time and the namespace inode; it
resolves only while all three still agree, so a reused pid never resolves to the wrong namespace.
Entries that no longer agree are deleted whenever they are read.

A name is first reserved (O_EXCL, with the launcher's own identity) before any namespace exists,
then committed once the namespace is up, and released when it ends.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pidns import statedir
from pidns.errors import NameInUse, PidnsError, UsageError
from pidns.procfs.parse import stat_start_time

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def default_directory() -> Path:
    return statedir.base() / "names"


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or name == "host":
        raise UsageError(
            f"bad namespace name {name!r}: use up to 64 letters, digits, '_', '.', '-', "
            "starting with a letter or '_' (and not 'host')"
        )
    return name


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot), None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return stat_start_time(f.read())
    except (OSError, ValueError):
        return None


def _ns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


class Entry:
    """A registered name. `pending` entries hold a name for a launcher still starting up."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.name: str = data["name"]
        self.pid: int = int(data["pid"])
        self.start_time: int = int(data["start_time"])
        self.ns: int | None = data.get("ns")
        self.namespaces: list[int] = list(data.get("namespaces", []))
        self.pending: bool = bool(data.get("pending", False))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "start_time": self.start_time,
            "ns": self.ns,
            "namespaces": self.namespaces,
            "pending": self.pending,
        }

    def alive(self) -> bool:
        """Whether the process recorded is still the same one, in the same namespace."""
        if start_time(self.pid) != self.start_time:
            return False
        if self.pending:
            return True
        return self.ns is not None and _ns_inode(self.pid) == self.ns


class Registry:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else default_directory()

    def _path(self, name: str) -> Path:
        return self.directory / f"{check_name(name)}.json"

    def _ensure(self) -> None:
        """The directory, private to this user, before anything in it is trusted or written."""
        statedir.private(self.directory.parent)
        statedir.private(self.directory)

    def _read(self, path: Path) -> Entry | None:
        try:
            entry = Entry(json.loads(path.read_bytes()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            entry = None
        if entry is None or not entry.alive():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return None
        return entry

    def lookup(self, name: str) -> Entry | None:
        """The live, committed entry for name (stale ones are deleted on the way)."""
        path = self._path(name)
        self._ensure()
        entry = self._read(path)
        return entry if entry is not None and not entry.pending else None

    def entries(self) -> Iterator[Entry]:
        self._ensure()
        for path in sorted(self.directory.glob("*.json")):
            entry = self._read(path)
            if entry is not None and not entry.pending:
                yield entry

    def reserve(self, name: str) -> Reservation:
        """Hold name for this process; NameInUse when a live namespace (or launch) has it."""
        path = self._path(name)
        self._ensure()
        me = os.getpid()
        mine = Entry({"name": name, "pid": me, "start_time": start_time(me), "pending": True})
        for _ in range(3):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                held = self._read(path)
                if held is not None:
                    what = "a launch starting up" if held.pending else f"pid:[{held.ns}]"
                    raise NameInUse(f"the name {name!r} is already in use by {what}") from None
                continue  # stale: _read removed it
            with os.fdopen(fd, "w") as f:
                json.dump(mine.to_json(), f)
            return Reservation(path, mine)
        raise NameInUse(f"the name {name!r} keeps being taken; try again")


class Reservation:
    def __init__(self, path: Path, entry: Entry) -> None:
        self.path = path
        self.entry = entry

    def commit(self, init_pid: int, namespaces: list[int]) -> None:
        """Point the name at the namespace whose pid 1 is init_pid (host pid)."""
        when = start_time(init_pid)
        if when is None:
            raise PidnsError("the namespace ended before its name could be registered")
        self.entry = Entry(
            {
                "name": self.entry.name,
                "pid": init_pid,
                "start_time": when,
                "ns": namespaces[-1],
                "namespaces": namespaces,
            }
        )
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(self.entry.to_json()))
        os.replace(tmp, self.path)

    def release(self) -> None:
        """Remove the entry if it is still ours."""
        try:
            current = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return
        if current == self.entry.to_json():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def lookup_inode(name: str) -> int | None:
    """The designator hook: a registered name's namespace inode (None: not a live name)."""
    try:
        check_name(name)
    except UsageError:
        return None
    try:
        entry = Registry().lookup(name)
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM):
            return None
        raise
    return entry.ns if entry is not None else None


def names_by_inode() -> dict[int, str]:
    """Names to show beside namespaces; none when the directory is unusable (`ls` goes on)."""
    out: dict[int, str] = {}
    try:
        for entry in Registry().entries():
            if entry.ns is not None:
                out[entry.ns] = entry.name
    except (OSError, PidnsError):
        pass
    return out
