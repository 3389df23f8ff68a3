"""One exception family for pidns, and the single place an OSError becomes one of them."""

from __future__ import annotations

import errno


class PidnsError(Exception):
    """Base of every error pidns raises on purpose. `exit_code` is what the CLI exits with,
    `errno` what a reader of a FUSE view gets when a request fails with it."""

    exit_code = 1
    errno = errno.EIO


class UsageError(PidnsError):
    """The caller asked for something that cannot make sense (exit status 2)."""

    exit_code = 2


class BadDesignator(UsageError):
    """A namespace designator (`--ns`) that names no PID namespace."""


class ProcessGone(PidnsError):
    """The process exited (or its pid now belongs to another process)."""

    errno = errno.ESRCH


class NamespaceGone(PidnsError):
    """The namespace has no live task left to reach it through."""

    errno = errno.ENOENT


class AccessDenied(PidnsError):
    """The kernel refused to show something to this caller (EACCES)."""

    errno = errno.EACCES


class NotPermitted(PidnsError):
    """The operation needs a privilege the caller lacks (EPERM)."""

    errno = errno.EPERM


class NotVisible(PidnsError):
    """A pid has no number in the namespace asked about."""


class Unsupported(PidnsError):
    """The running kernel or machine lacks a needed feature."""


class LaunchFailed(PidnsError):
    """pidns itself failed before the command started (`run`, `exec`)."""

    exit_code = 125


class NameInUse(LaunchFailed):
    """`--name` is held by a live namespace."""


class NotExecutable(PidnsError):
    """The command was found but could not be executed."""

    exit_code = 126


class CommandNotFound(PidnsError):
    exit_code = 127


def from_oserror(err: OSError, what: str) -> PidnsError:
    """Turn an OSError about `what` into the matching PidnsError, with a one-line message."""
    reason = err.strerror or str(err)
    code = err.errno
    if code == errno.ESRCH:
        return ProcessGone(f"{what}: no such process")
    if code == errno.EACCES:
        return AccessDenied(f"{what}: permission denied (try as root or as the process's owner)")
    if code == errno.EPERM:
        return NotPermitted(f"{what}: operation not permitted (needs privilege)")
    if code in (errno.ENOSYS, errno.ENOTTY, errno.EOPNOTSUPP):
        return Unsupported(f"{what}: not supported by this kernel ({reason})")
    return PidnsError(f"{what}: {reason}")
