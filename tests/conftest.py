"""Markers for tests that need privileges or devices: they skip with a printed reason elsewhere."""

from __future__ import annotations

import os
import shutil

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    not_root = None if os.geteuid() == 0 else "needs root: creates namespaces and mounts procfs"
    no_fuse = _fuse_missing()
    for item in items:
        if not_root and item.get_closest_marker("root"):
            item.add_marker(pytest.mark.skip(reason=not_root))
        if no_fuse and item.get_closest_marker("fuse"):
            item.add_marker(pytest.mark.skip(reason=no_fuse))
