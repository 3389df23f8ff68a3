"""pidns: Linux PID namespaces and their proc trees — create, inspect, serve.

The public API. Names load on first use, so `import pidns` (and the CLI that lives under it)
stays nearly free.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing would cost more than all the rest
if TYPE_CHECKING:
    from typing import Any

    from pidns.errors import (
        AccessDenied,
        BadDesignator,
        CommandNotFound,
        LaunchFailed,
        NameInUse,
        NamespaceGone,
        NotExecutable,
        NotPermitted,
        NotVisible,
        PidnsError,
        ProcessGone,
        Unsupported,
        UsageError,
    )
    from pidns.ids import HostPid, NsId, NsPid, TaskId
    from pidns.model import PidNamespace, Snapshot, Task, TaskView
    from pidns.procfs.snapshot import snapshot
    from pidns.runtime.run import run
    from pidns.sandbox import Process, Sandbox

_WHERE = {
    "snapshot": "pidns.procfs.snapshot",
    "Snapshot": "pidns.model",
    "Task": "pidns.model",
    "PidNamespace": "pidns.model",
    "TaskView": "pidns.model",
    "Sandbox": "pidns.sandbox",
    "Process": "pidns.sandbox",
    "run": "pidns.runtime.run",
    "HostPid": "pidns.ids",
    "NsPid": "pidns.ids",
    "NsId": "pidns.ids",
    "TaskId": "pidns.ids",
    "PidnsError": "pidns.errors",
    "UsageError": "pidns.errors",
    "BadDesignator": "pidns.errors",
    "ProcessGone": "pidns.errors",
    "NamespaceGone": "pidns.errors",
    "AccessDenied": "pidns.errors",
    "NotPermitted": "pidns.errors",
    "NotVisible": "pidns.errors",
    "Unsupported": "pidns.errors",
    "LaunchFailed": "pidns.errors",
    "NameInUse": "pidns.errors",
    "NotExecutable": "pidns.errors",
    "CommandNotFound": "pidns.errors",
}

__all__ = [
    "AccessDenied",
    "BadDesignator",
    "CommandNotFound",
    "HostPid",
    "LaunchFailed",
    "NameInUse",
    "NamespaceGone",
    "NotExecutable",
    "NotPermitted",
    "NotVisible",
    "NsId",
    "NsPid",
    "PidNamespace",
    "PidnsError",
    "Process",
    "ProcessGone",
    "Sandbox",
    "Snapshot",
    "Task",
    "TaskId",
    "TaskView",
    "Unsupported",
    "UsageError",
    "run",
    "snapshot",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pidns' has no attribute {name!r}")
    value = getattr(__import__(module, fromlist=[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
