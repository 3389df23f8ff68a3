"""Where a user's views are recorded: the daemon's socket, and one record per mountpoint.

`pidns mounts` reads the records (kernel-backend views have no daemon to ask); a record whose
mountpoint is no longer mounted is stale and dropped.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from pidns import statedir
from pidns.view.mountsys import is_mountpoint


def state_dir() -> Path:
    """This user's private state directory, with its `views` directory (see pidns.statedir)."""
    base = statedir.private(statedir.base())
    statedir.private(base / "views")
    return base


def socket_path() -> Path:
    return state_dir() / "daemon.sock"


def _record_path(mountpoint: str) -> Path:
    import hashlib  # here: OpenSSL costs the daemon megabytes of RSS, and it rarely needs this

    digest = hashlib.sha1(os.fsencode(mountpoint)).hexdigest()[:16]
    return state_dir() / "views" / f"{digest}.json"


def record(mountpoint: str, data: dict[str, Any]) -> None:
    path = _record_path(mountpoint)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"mountpoint": mountpoint, **data}))
    tmp.replace(path)


def forget(mountpoint: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        _record_path(mountpoint).unlink()


def lookup(mountpoint: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(_record_path(mountpoint).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data


def records() -> list[dict[str, Any]]:
    """Every recorded view still mounted, sorted by mountpoint; stale records are removed."""
    found = []
    for path in sorted((state_dir() / "views").glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not is_mountpoint(data.get("mountpoint", "")):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        found.append(data)
    return sorted(found, key=lambda d: str(d["mountpoint"]))
