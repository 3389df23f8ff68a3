"""Containers: which container a namespace belongs to, and designators that name one.

cgroup.py       pure: /proc/PID/cgroup bytes -> runtime, container id, pod UID (every layout)
state.py        the runtimes' state files (names, pods, recorded pids); roots configurable
live.py         the kernel's side: cgroup scans, and the check every recorded pid must pass
runtime_cli.py  opt-in: the runtime's own CLI, with a timeout
resolve.py      `docker:web`, `k8s:shop/cart/app`, ... -> a PID namespace inode
label.py        the reverse: a snapshot's namespaces named after their containers
"""

from __future__ import annotations

from pidns.containers.label import Labels, label
from pidns.containers.record import Container
from pidns.containers.resolve import PREFIXES, ContainerNotRunning, resolve_designator
from pidns.containers.runtime_cli import use as use_runtime_cli
from pidns.containers.state import Roots, StateReader

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
