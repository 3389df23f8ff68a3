"""The name registry on a private directory: reserve, commit, release, identity checks."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pidns.errors import NameInUse, UsageError
from pidns.names import Registry, check_name, start_time


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def own_ns() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


def write_entry(directory: Path, name: str, **fields: object) -> Path:
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"name": name, **fields}))
    return path


@pytest.mark.parametrize("name", ["a", "web-1", "_x.y", "A" * 64])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "1abc", "4026531836", "host", "a/b", "@1", "pid:[1]", "a b", "A" * 65, "-x"]
)
def test_bad_names(name: str) -> None:
    with pytest.raises(UsageError):
        check_name(name)


def test_commit_then_lookup_then_release(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "names")
    held = registry.reserve("web")
    assert registry.lookup("web") is None  # pending: not resolvable yet
    held.commit(os.getpid(), [own_ns()])
    entry = registry.lookup("web")
    assert entry is not None and entry.ns == own_ns() and entry.pid == os.getpid()
    assert [e.name for e in registry.entries()] == ["web"]
    held.release()
    assert registry.lookup("web") is None
    assert not (tmp_path / "names" / "web.json").exists()


def test_a_live_name_cannot_be_taken(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "names")
    held = registry.reserve("web")
    with pytest.raises(NameInUse, match="starting up"):
        registry.reserve("web")
    held.commit(os.getpid(), [own_ns()])
    with pytest.raises(NameInUse, match=f"pid:\\[{own_ns()}\\]"):
        registry.reserve("web")


def test_reused_pid_never_resolves(tmp_path: Path) -> None:
    """Our pid is live, but the entry's start time is another process's: stale, pruned."""
    directory = tmp_path / "names"
    me = os.getpid()
    when = start_time(me)
    assert when is not None
    path = write_entry(directory, "old", pid=me, start_time=when - 1, ns=own_ns())
    assert Registry(directory).lookup("old") is None
    assert not path.exists()


def test_same_process_other_namespace_never_resolves(tmp_path: Path) -> None:
    directory = tmp_path / "names"
    me = os.getpid()
    path = write_entry(directory, "moved", pid=me, start_time=start_time(me), ns=own_ns() + 1)
    assert Registry(directory).lookup("moved") is None
    assert not path.exists()


def test_dead_pid_is_pruned_and_the_name_reusable(tmp_path: Path) -> None:
    directory = tmp_path / "names"
    write_entry(directory, "gone", pid=dead_pid(), start_time=1, ns=own_ns())
    write_entry(directory, "starting", pid=dead_pid(), start_time=1, pending=True)
    registry = Registry(directory)
    assert list(registry.entries()) == []
    registry.reserve("gone").release()
    registry.reserve("starting").release()


def test_corrupt_entry_is_pruned(tmp_path: Path) -> None:
    directory = tmp_path / "names"
    directory.mkdir(mode=0o700)
    (directory / "bad.json").write_text("{not json")
    assert Registry(directory).lookup("bad") is None
    assert not (directory / "bad.json").exists()


def test_an_open_directory_of_ours_is_made_private(tmp_path: Path) -> None:
    directory = tmp_path / "names"
    directory.mkdir(mode=0o777)
    directory.chmod(0o777)
    Registry(directory).reserve("x")
    assert directory.stat().st_mode & 0o777 == 0o700


@pytest.mark.root
def test_another_users_directory_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o777)
    os.chown(theirs, 4444, 4444)
    with pytest.raises(Exception, match="not a private directory"):
        Registry(theirs / "names").reserve("x")
