"""systemd-nspawn containers that machined does not know (`--register=no`, or no machined).

The payload's init is a child of the `systemd-nspawn` process, whose command line names the
machine: `-M/--machine NAME`, else the last component of `-D/--directory` or `-i/--image`, as
nspawn itself derives it. Only the process's command line is read, never the container's tree.
"""

from __future__ import annotations

import os
import re

COMM = "systemd-nspawn"
_IMAGE_SUFFIX = re.compile(r"\.raw$")


def machine_name(argv: list[str]) -> str | None:
    """The machine name nspawn uses for this command line, or None when none is derivable."""
    name = directory = image = None
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            break
        for short, long, slot in (
            ("-M", "--machine", "m"),
            ("-D", "--directory", "d"),
            ("-i", "--image", "i"),
        ):
            value = None
            if arg in (short, long) and i + 1 < len(argv):
                value = argv[i + 1]
                i += 1
            elif arg.startswith(long + "="):
                value = arg[len(long) + 1 :]
            elif arg.startswith(short) and len(arg) > 2 and not arg.startswith("--"):
                value = arg[2:]
            if value is not None:
                # The first of each wins: options precede the command run inside, whose own
                # arguments may look the same.
                if slot == "m":
                    name = name or value
                elif slot == "d":
                    directory = directory or value
                else:
                    image = image or value
                break
        i += 1
    if name:
        return name
    if directory:
        return os.path.basename(directory.rstrip("/")) or None
    if image:
        return _IMAGE_SUFFIX.sub("", os.path.basename(image)) or None
    return None
