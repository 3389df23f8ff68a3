"""Failures of the runtime, with the exit statuses `pidns run` and `pidns exec` promise."""

from __future__ import annotations

from pidns.errors import PidnsError


class LaunchFailed(PidnsError):
    """pidns itself failed before the command started."""

    exit_code = 125


class NameInUse(LaunchFailed):
    """`--name` is held by a live namespace."""


class NotExecutable(PidnsError):
    """The command was found but could not be executed."""

    exit_code = 126


class CommandNotFound(PidnsError):
    exit_code = 127
