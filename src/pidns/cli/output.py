"""Shared output helpers: JSON on stdout, rich for humans, user names."""

from __future__ import annotations

import pwd
import sys
from functools import cache

# Imported where used: `ps --json` needs only warn from here (json's decoder compiles
# regular expressions at import; shutil imports compression modules; typing, re and more).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from rich.console import Console


def emit_json(data: Any) -> None:
    import json

    sys.stdout.write(json.dumps(data, separators=(",", ":")))
    sys.stdout.write("\n")


def console() -> Console:
    from rich.console import Console

    # Piped output is never cut, like ps: a wide virtual terminal instead of 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 100_000)


def print_columns(headers: list[str], rows: list[list[str]], left: set[str]) -> None:
    """A ps-style table: numbers right-aligned, text left; the last column is cut to the
    terminal's width when printing to one, never when piped."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    import shutil

    limit = shutil.get_terminal_size().columns if sys.stdout.isatty() else 0

    def line(cells: list[str]) -> str:
        parts = []
        for i, (cell, header) in enumerate(zip(cells, headers, strict=True)):
            last = i == len(headers) - 1
            if header in left:
                parts.append(cell if last else cell.ljust(widths[i]))
            else:
                parts.append(cell.rjust(widths[i]))
        text = " ".join(parts)
        return text[: limit - 1] + "…" if limit and len(text) > limit else text

    sys.stdout.write("\n".join(line(r) for r in [headers, *rows]) + "\n")


@cache
def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def warn(message: str) -> None:
    sys.stderr.write(f"pidns: warning: {message}\n")
