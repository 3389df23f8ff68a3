"""The user namespace of a rootless launch: the caller's uid/gid mapped to 0, and why it failed."""

from __future__ import annotations

import errno
import os


def map_to_root(uid: int, gid: int) -> None:
    """Map uid/gid (the caller's before unshare) to 0 in the user namespace just unshared."""
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {uid} 1")
    _write("/proc/self/gid_map", f"0 {gid} 1")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _sysctl(root: str, name: str) -> str | None:
    try:
        with open(f"{root}/{name.replace('.', '/')}") as f:
            return f.read().strip()
    except OSError:
        return None


def why_unavailable(code: int, sysctl_root: str = "/proc/sys") -> str:
    """Why creating a user namespace failed with errno `code`, naming the setting to change."""
    if _sysctl(sysctl_root, "kernel.unprivileged_userns_clone") == "0":
        return "user namespaces are disabled for unprivileged users: set the sysctl kernel.unprivileged_userns_clone=1"
    if _sysctl(sysctl_root, "user.max_user_namespaces") == "0":
        return "user namespaces are disabled: set the sysctl user.max_user_namespaces to a positive number"
    if _sysctl(sysctl_root, "kernel.apparmor_restrict_unprivileged_userns") == "1":
        return "AppArmor restricts unprivileged user namespaces: set the sysctl kernel.apparmor_restrict_unprivileged_userns=0"
    if code == errno.ENOSPC:
        return "the limit on user namespaces is reached (sysctl user.max_user_namespaces, or 32 nested levels)"
    if code == errno.EINVAL:
        return "this kernel has no user namespaces (CONFIG_USER_NS)"
    return f"creating a user namespace failed: {os.strerror(code)} (a seccomp filter or a container may forbid it)"
