"""How any error ends the CLI: one line on stderr and an exit status. Click-free, so the fast
paths of main.py share it with the click commands."""

from __future__ import annotations

import sys

from pidns.errors import PidnsError


def fail(message: str, code: int) -> int:
    sys.stderr.write(f"pidns: error: {message}\n")
    return code


def exit_status(err: BaseException) -> int:
    """Report err as the CLI does and return the exit status; re-raise what isn't ours."""
    if isinstance(err, PidnsError):
        return fail(str(err), err.exit_code)
    if isinstance(err, KeyboardInterrupt):
        return 130
    if isinstance(err, BrokenPipeError):
        return 0  # the reader of our output went away: nothing left to say to anyone
    if isinstance(err, OSError):  # last resort: a refusal no layer translated
        return fail(f"{err.filename or 'pidns'}: {err.strerror or err}", 1)
    raise err
