"""The one directory where a user's pidns state lives: the view daemon's socket, lock and log, the
records of mounted views, and the names of namespaces.

PIDNS_STATE_DIR when set; otherwise /run/pidns for root, $XDG_RUNTIME_DIR/pidns for others, or
/tmp/pidns-UID without a runtime directory. Whatever holds it must be this user's alone: another
user who could write there could answer as the daemon (and be handed /dev/fuse and namespace fds)
or plant a name that points at their own namespace. /tmp/pidns-UID in particular may have been
made by someone else first, so the directory is checked each time it is used, not only created.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pidns.errors import PidnsError


def base() -> Path:
    explicit = os.environ.get("PIDNS_STATE_DIR")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/run/pidns")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "pidns"
    return Path(f"/tmp/pidns-{os.geteuid()}")


def private(path: Path) -> Path:
    """path as a directory of this user's alone: made 0700 when missing; group and other access
    taken away when it is ours already; refused when it is a symlink or another user's."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as err:
        raise PidnsError(f"cannot create {path}: {err.strerror}") from None
    found = os.lstat(path)
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid():
        what = "a symlink" if stat.S_ISLNK(found.st_mode) else f"owned by uid {found.st_uid}"
        raise PidnsError(
            f"{path} is not a private directory of this user ({what}): refusing to use it;"
            " remove it or set PIDNS_STATE_DIR"
        )
    if stat.S_IMODE(found.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path
