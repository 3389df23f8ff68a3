"""Files kept open by a long-running reader (pidns.procfs.held) read as fresh as an open would:
a cgroup file shows its new value, a cgroup removed and made again at the same path is read
anew, and a proc file renders afresh from offset 0."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from pidns.procfs.held import HeldFiles

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        not os.path.isdir("/sys/fs/cgroup/memory"), reason="needs the v1 memory hierarchy"
    ),
]


def test_a_kept_cgroup_file_follows_writes_removal_and_a_new_cgroup_at_its_path() -> None:
    path = f"/sys/fs/cgroup/memory/pidns-held-{uuid.uuid4().hex[:8]}"
    limit = f"{path}/memory.limit_in_bytes"
    files = HeldFiles(limit=2)
    os.mkdir(path)
    try:
        with open(limit, "w") as f:
            f.write("64M")
        assert files.read(limit) == b"67108864\n"
        with open(limit, "w") as f:
            f.write("32M")
        assert files.read(limit) == b"33554432\n"  # the same fd, read again from its start
        os.rmdir(path)
        with pytest.raises(OSError):
            files.read(limit)  # its cgroup is gone: the kept fd is dropped, the path is missing
        os.mkdir(path)
        with open(limit, "w") as f:
            f.write("16M")
        assert files.read(limit) == b"16777216\n"  # the new cgroup's, not the removed one's
    finally:
        files.close()
        if os.path.isdir(path):
            os.rmdir(path)


def test_kept_files_are_bounded_and_proc_files_render_afresh() -> None:
    files = HeldFiles(limit=2)
    before = len(os.listdir("/proc/self/fd"))
    try:
        first = float(files.read("/proc/uptime").split()[0])
        for name in ("/proc/loadavg", "/proc/meminfo", "/proc/stat"):
            files.read(name)
        assert len(os.listdir("/proc/self/fd")) == before + 2  # the two read last
        time.sleep(0.05)
        files.read("/proc/uptime")
        assert float(files.read("/proc/uptime").split()[0]) > first  # kept, and read anew
    finally:
        files.close()
    assert len(os.listdir("/proc/self/fd")) == before
