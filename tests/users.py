"""Becoming an unprivileged user in tests: the uid, and fixtures for a home it owns and a
/dev/fuse it may open. Registered for every test by tests/conftest.py."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def device_for_users() -> Iterator[None]:
    """fusermount3 opens /dev/fuse with the user's rights: make it 0666, as udev does on Debian,
    for the test's duration when this machine has it root-only."""
    mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    if mode & 0o006 != 0o006:
        os.chmod("/dev/fuse", mode | 0o666)
    try:
        yield
    finally:
        os.chmod("/dev/fuse", mode)


@pytest.fixture
def home() -> Iterator[Path]:
    """A home (and XDG_RUNTIME_DIR) the user owns, where the user can reach it."""
    path = Path(tempfile.mkdtemp(prefix="pidns-nobody-"))
    os.chown(path, NOBODY, NOBODY)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
