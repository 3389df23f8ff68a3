"""Containers: which container a namespace belongs to, and designators that name one.

cgroup.py       pure: /proc/PID/cgroup bytes -> runtime, container id, pod UID (every layout)
state.py        the runtimes' state files (names, pods, recorded pids); roots configurable
live.py         the kernel's side: cgroup scans, and the check every recorded pid must pass
runtime_cli.py  opt-in: the runtime's own CLI, with a timeout
resolve.py      `docker:web`, `k8s:shop/cart/app`, ... -> a PID namespace inode
naming.py       the reverse: a snapshot's namespaces named after their containers
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pidns.containers.naming import Labels, label
    from pidns.containers.record import Container
    from pidns.containers.resolve import PREFIXES, ContainerNotRunning, resolve_designator
    from pidns.containers.runtime_cli import use as use_runtime_cli
    from pidns.containers.state import Roots, StateReader

# Each name from the module that holds it, imported at first use: naming namespaces (`ls`, `ps`)
# needs naming.py and what it reads, not the resolver, nor the runtime CLI's subprocess.
_WHERE = {
    "Labels": ("naming", "Labels"),
    "label": ("naming", "label"),
    "Container": ("record", "Container"),
    "PREFIXES": ("resolve", "PREFIXES"),
    "ContainerNotRunning": ("resolve", "ContainerNotRunning"),
    "resolve_designator": ("resolve", "resolve_designator"),
    "use_runtime_cli": ("runtime_cli", "use"),
    "Roots": ("state", "Roots"),
    "StateReader": ("state", "StateReader"),
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{where[0]}"), where[1])
    globals()[name] = value
    return value


__all__ = [
    "PREFIXES",
    "Container",
    "ContainerNotRunning",
    "Labels",
    "Roots",
    "StateReader",
    "label",
    "resolve_designator",
    "use_runtime_cli",
]
