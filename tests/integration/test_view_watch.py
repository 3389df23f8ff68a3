"""Exits as the view daemon learns them, from the proc connector or from pidfds (no privilege needed)."""

from __future__ import annotations

import subprocess
import threading

import pytest

from pidns.view.instances import Instance, Registry
from pidns.view.watch import Watcher


@pytest.mark.parametrize("use_connector", [True, False])
def test_a_task_is_flushed_once_reaped_not_while_a_zombie(use_connector: bool) -> None:
    flushed: list[int] = []
    changed = threading.Condition()

    def flush(pid: int) -> None:  # with the connector: every task of the host that exits
        with changed:
            flushed.append(pid)
            changed.notify_all()

    def flushed_soon(pid: int, timeout: float) -> bool:
        with changed:
            return changed.wait_for(lambda: pid in flushed, timeout)

    def on_dead(instance: Instance) -> None:
        raise AssertionError("no namespace here")

    registry = Registry()
    watcher = Watcher(registry, flush, on_dead, threading.RLock(), use_connector=use_connector)
    watcher.start()
    child = subprocess.Popen(["sleep", "1000"])
    try:
        watcher.watch(child.pid)  # what the views do for each task they show (pidfd mode)
        child.kill()
        assert not flushed_soon(child.pid, 0.2)  # a zombie stays listed until reaped
        child.wait()
        assert flushed_soon(child.pid, 10)
    finally:
        child.kill()
        child.wait()
        watcher.stop()
        registry.close()
