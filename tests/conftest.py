"""Markers for tests that need privileges or devices: they skip with a printed reason elsewhere."""

from __future__ import annotations

import os
import shutil
import signal

import pytest

pytest_plugins = ["tests.users"]  # fixtures for tests that become an unprivileged user


def _fuse_missing() -> str | None:
    """The product's own check, plus fusermount3 (tests also mount as an unprivileged user)."""
    from pidns.view.api import fuse_missing

    reason = fuse_missing()
    if reason is not None:
        return f"needs FUSE: {reason}"
    if shutil.which("fusermount3") is None:
        return "needs fusermount3 (apt-get install fuse3)"
    return None


def pytest_configure(config: pytest.Config) -> None:
    """The suite's processes get the dispositions a terminal would give them, however it was
    started: a background job of a non-interactive shell (`sh -c './go test &'`) starts with
    SIGINT and SIGQUIT ignored, and every process the tests start would inherit that (an ignored
    signal stays ignored across exec). Tests of that case make it themselves."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGQUIT) == signal.SIG_IGN:
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    not_root = None if os.geteuid() == 0 else "needs root: creates namespaces and mounts procfs"
    no_fuse = _fuse_missing()
    for item in items:
        if not_root and item.get_closest_marker("root"):
            item.add_marker(pytest.mark.skip(reason=not_root))
        if no_fuse and item.get_closest_marker("fuse"):
            item.add_marker(pytest.mark.skip(reason=no_fuse))
