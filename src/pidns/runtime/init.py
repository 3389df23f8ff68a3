"""The pid-1 loop of each level: reap every zombie, forward signals, end with the command.

It runs in a process forked from the launcher, so it must stay small: only os and signal here.
Signals are blocked and taken with sigwaitinfo, which also makes the kernel queue signals sent
from an ancestor namespace (it drops those an init neither blocks nor handles).
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # no typing in pid 1: it would cost memory and start-up
if TYPE_CHECKING:
    import signal
    from typing import NoReturn
else:
    import _signal as signal  # the same calls without signal's enums (an import of enum)

FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCONT,
)
WAITED = frozenset((*FORWARDED, signal.SIGCHLD))
_STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def exit_code(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128+N when killed by signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def serve(
    child: int | None,
    *,
    to_group: bool = False,
    kill_timeout: float = 2.0,
    status_fd: int | None = None,
) -> NoReturn:
    """Be pid 1 until `child` exits (forever when None), then exit with its status.

    The caller has blocked WAITED. When the child exits, everything left in the namespace gets
    SIGTERM; after kill_timeout (or as soon as no child is left) this process exits and the
    kernel SIGKILLs whatever remains. status_fd, if given, receives an `exit` record.
    """
    code: int | None = None
    deadline: float | None = None
    while True:
        if deadline is None:
            info = signal.sigwaitinfo(WAITED)
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            timed = signal.sigtimedwait(WAITED, remaining)
            if timed is None:
                break
            info = timed
        sig = info.si_signo
        if sig != signal.SIGCHLD:
            if child is None:
                if sig in _STOPPING:
                    os._exit(128 + sig)
                continue
            if code is None:
                _forward(-child if to_group else child, sig)
            continue
        status, left = _reap(child)
        if status is not None and code is None:
            code = exit_code(status)
            if status_fd is not None:
                sent = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
                os.write(status_fd, f"exit\t{code}\t{sent}\n".encode())
            _forward(-1, signal.SIGTERM)
            deadline = time.monotonic() + kill_timeout
        if code is not None and not left:
            break
    os._exit(code if code is not None else 0)


def _reap(child: int | None) -> tuple[int | None, bool]:
    """Reap every zombie child: (child's wait status if it was among them, any child left)."""
    found = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found, False
        if pid == 0:
            return found, True
        if pid == child:
            found = status


def _forward(target: int, sig: int) -> None:
    try:  # noqa: SIM105 - pid 1 imports only os and signal
        os.kill(target, sig)
    except ProcessLookupError:  # it exited meanwhile: nothing to forward to
        pass
