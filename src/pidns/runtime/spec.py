"""What to launch: the options of `pidns run`, as data."""

from __future__ import annotations

MAX_NEST = 32  # MAX_PID_NS_LEVEL: the kernel refuses a 33rd level below the initial namespace


class Spec:
    """(A plain class: `pidns run` starts faster without dataclasses and typing.)"""

    __slots__ = (
        "argv",
        "cgroup_fds",
        "command_pid",
        "die_with_parent",
        "ignored",
        "init",
        "kill_timeout",
        "nest",
        "timens",
        "to_group",
        "user",
    )

    def __init__(
        self,
        argv: tuple[str, ...] | None,
        *,
        nest: int = 1,
        user: bool | None = None,
        init: bool = True,
        to_group: bool = False,
        kill_timeout: float = 2.0,
        die_with_parent: bool = True,
        ignored: frozenset[int] = frozenset(),
        cgroup_fds: tuple[int, ...] = (),
        timens: bool = False,
        command_pid: bool = False,
    ) -> None:
        self.argv = argv  # None: no command; the namespace idles until killed (Sandbox)
        self.nest = nest
        self.user = user  # None: a user namespace exactly when not root
        self.init = init  # False: the command itself is pid 1 of the innermost level
        self.to_group = to_group  # forward signals to the command's process group
        self.kill_timeout = kill_timeout
        self.die_with_parent = die_with_parent
        # Signals the caller had ignored, which the launcher now catches to forward them: the
        # command gets them ignored again (see runtime/forward.py).
        self.ignored = ignored
        # cgroup.procs files (runtime/cgroup.py) the first level's init moves itself into
        self.cgroup_fds = cgroup_fds
        self.timens = timens  # the levels live in a time namespace born with them
        # Launched.command must be the command's host pid (for --status-json); else it may be
        # None, which lets the innermost init spawn the command instead of forking it.
        self.command_pid = command_pid

    def uses_userns(self, euid: int) -> bool:
        return euid != 0 if self.user is None else self.user

    def waits_for_command(self, level: int) -> bool:
        """Whether the stage at `level` (0: the helper) is the command's parent."""
        if self.argv is None:
            return False
        return level == self.nest if self.init else level == self.nest - 1
