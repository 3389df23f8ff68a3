"""Uid, Gid and Groups as the reader's user namespace numbers them (docs/kernel-proc.md §10), against the
kernel: a reader in a user namespace with random uid and gid maps reads every task's status through
the FUSE view and through a kernel procfs of the same pid namespace, and both must say the same."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.soak.support import namespace, private_daemon

pytestmark = [pytest.mark.root, pytest.mark.fuse]

# The namespace's tasks: root's, nobody's, and one of another user with supplementary groups.
TASKS = (
    "sleep 1000 & "
    "setpriv --reuid=65534 --regid=65534 --clear-groups sleep 1000 & "
    "setpriv --reuid=4343 --regid=4242 --groups=24,4242,70000 sleep 1000 & wait"
)

# The reader: once its parent has written its maps, the Uid/Gid/Groups lines of every task of
# both trees, as JSON.
READER = r"""
import json, os, sys, time
while not open("/proc/self/uid_map").read().strip() or not open("/proc/self/gid_map").read().strip():
    time.sleep(0.005)
out = {}
for tree in sys.argv[1:]:
    seen = {}
    for pid in sorted(n for n in os.listdir(tree) if n.isdigit()):
        try:
            lines = open(f"{tree}/{pid}/status").read().splitlines()
        except OSError as err:
            seen[pid] = err.strerror
            continue
        seen[pid] = [l for l in lines if l.split(":")[0] in ("Uid", "Gid", "Groups")]
    out[tree] = seen
print(json.dumps(out))
"""


@dataclass
class Trees:
    fuse: Path
    kernel: Path


@pytest.fixture(scope="module")
def trees() -> Iterator[Trees]:
    from pidns.view.api import open_view

    base = Path(tempfile.mkdtemp(prefix="pidns-userns-"))
    os.chmod(base, 0o755)  # the reader's user namespace does not own it
    fuse, kernel = base / "fuse", base / "kernel"
    fuse.mkdir()
    kernel.mkdir()
    try:
        with private_daemon(base), namespace(TASKS) as init:
            time.sleep(0.2)  # the setpriv children exec sleep
            ns = f"/proc/{init}/ns/pid"
            subprocess.run(["mount", "-t", "proc", "-o", f"pidns={ns}", "proc", kernel], check=True)
            handle = open_view(f"@{init}", str(fuse), backend="fuse", allow_other=True)
            try:
                yield Trees(fuse, kernel)
            finally:
                handle.close()
                subprocess.run(["umount", str(kernel)], check=False)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(base)


def read_as(trees: Trees, uid_map: str, gid_map: str) -> dict[str, dict[str, object]]:
    """What a reader in a new user namespace with these maps reads in both trees."""
    reader = subprocess.Popen(
        ["unshare", "--user", "python3", "-S", "-c", READER, str(trees.fuse), str(trees.kernel)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while os.stat(f"/proc/{reader.pid}/ns/user").st_ino == os.stat("/proc/self/ns/user").st_ino:
            assert time.monotonic() < deadline, "the reader did not enter a user namespace"
            time.sleep(0.005)
        Path(f"/proc/{reader.pid}/uid_map").write_text(uid_map)
        Path(f"/proc/{reader.pid}/gid_map").write_text(gid_map)
        out, _ = reader.communicate(timeout=30)
    finally:
        reader.kill()
        reader.wait()
    assert reader.returncode == 0
    got: dict[str, dict[str, object]] = json.loads(out)
    return got


ranges = st.tuples(
    st.integers(0, 70000),  # first id inside
    st.sampled_from([0, 24, 4242, 4343, 65534, 69000]),  # first id outside: near the tasks' ids
    st.integers(1, 5000),
)


def _map(parts: tuple[int, int, int]) -> str:
    inside, outside, count = parts
    return f"{inside} {outside} {count}\n"


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(uids=ranges, gids=ranges)
def test_status_ids_follow_the_readers_user_namespace(
    trees: Trees, uids: tuple[int, int, int], gids: tuple[int, int, int]
) -> None:
    seen = read_as(trees, _map(uids), _map(gids))
    fuse, kernel = seen[str(trees.fuse)], seen[str(trees.kernel)]
    assert len(kernel) >= 4  # the init and its three sleepers
    assert fuse == kernel


def test_a_reader_in_the_daemons_user_namespace_sees_host_ids(trees: Trees) -> None:
    """The same numbers the host's own /proc shows (no map: the ids as they are)."""
    for pid in (n for n in os.listdir(trees.kernel) if n.isdigit()):
        lines = [
            [line for line in Path(f"{tree}/{pid}/status").read_text().splitlines()
             if line.split(":")[0] in ("Uid", "Gid", "Groups")]
            for tree in (trees.fuse, trees.kernel)
        ]  # fmt: skip
        assert lines[0] == lines[1]
