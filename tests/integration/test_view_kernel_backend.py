"""The kernel backend's two ways to a procfs of NS: `pidns=` (6.18+) and, as older kernels need,
a task forked into NS doing the mount. Both must show the same tree."""

from __future__ import annotations

import os
import subprocess
import tempfile

import pytest

from pidns.kernel import nsfs
from pidns.procfs.parse import parse_status
from pidns.view.kernel import mount_proc
from pidns.view.options import Hidepid, ViewOptions
from tests.nstree import nested_tree

pytestmark = pytest.mark.root


def tasks(root: str) -> dict[int, tuple[int, tuple[int, ...]]]:
    found = {}
    for name in os.listdir(root):
        if name.isdigit():
            with open(f"{root}/{name}/status", "rb") as f:
                status = parse_status(f.read())
            found[status.pid] = (status.ppid, status.nspid)
    return found


@pytest.mark.parametrize("level", [1, 2])
def test_mount_from_inside_matches_pidns_option(level: int) -> None:
    options = ViewOptions(Hidepid.OFF, None, False, False, False, 0)
    with (
        nested_tree(2) as tree,
        tempfile.TemporaryDirectory() as a,
        tempfile.TemporaryDirectory() as b,
    ):
        fd = nsfs.open_ns(f"/proc/{tree.inits[level - 1]}/ns/pid")
        try:
            mount_proc(fd, a, options)
            mount_proc(fd, b, options, from_inside=True)
        finally:
            os.close(fd)
        try:
            assert tasks(a) == tasks(b)
            assert tasks(b)[1][0] == 0  # the namespace's own init, PPid 0 as it sees itself
            assert os.readlink(f"{b}/1/ns/pid") == f"pid:[{tree.ns_inode(level)}]"
        finally:
            subprocess.run(["umount", a], check=True)
            subprocess.run(["umount", b], check=True)


def test_mount_from_inside_a_dead_namespace_fails_cleanly() -> None:
    options = ViewOptions(Hidepid.OFF, None, False, False, False, 0)
    with nested_tree(1) as tree:
        fd = nsfs.open_ns(f"/proc/{tree.inits[0]}/ns/pid")
    try:  # the tree is gone: forking into its namespace fails (ENOMEM), nothing is mounted
        with tempfile.TemporaryDirectory() as target:
            with pytest.raises(Exception, match="mount failed"):
                mount_proc(fd, target, options, from_inside=True)
            assert not os.path.ismount(target)
    finally:
        os.close(fd)
