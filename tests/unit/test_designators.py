"""The one designator resolver, against this process's own /proc (no privileges needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pidns import designators
from pidns.errors import BadDesignator, UsageError
from pidns.kernel import nsfs
from pidns.names import Registry
from pidns.procfs.snapshot import snapshot

OWN = os.stat("/proc/self/ns/pid").st_ino


@pytest.mark.parametrize("text", [str(OWN), f"pid:[{OWN}]", f"@{os.getpid()}", "/proc/self/ns/pid"])
def test_every_form_of_this_process_names_its_namespace(text: str) -> None:
    assert designators.designated_inode(text) == OWN
    snap = snapshot()
    assert designators.resolve(text, snap).id.ino == OWN
    fd = designators.open_designated(text)
    try:
        assert nsfs.identity(fd).ino == OWN
    finally:
        os.close(fd)


def test_host_is_the_topmost_namespace_reachable() -> None:
    snap = snapshot()
    assert snap.root is not None
    assert designators.resolve("host", snap) is snap.namespaces[snap.root]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty namespace designator"),
        ("@abc", "'@' must be followed by a pid"),
        ("@999999999", "no such process"),
        ("/nonexistent/ns", "no such file"),
        ("/etc/hostname", "is not a namespace file"),
        ("/proc/self/ns/net", "not of a PID namespace"),
        ("no-such-name", "is not a known namespace"),
    ],
)
def test_what_names_nothing_is_a_usage_error_naming_the_input(text: str, says: str) -> None:
    with pytest.raises(BadDesignator, match=says):
        designators.designated_inode(text)


def test_an_inode_no_task_shows_is_refused_against_a_snapshot() -> None:
    with pytest.raises(BadDesignator, match="no PID namespace with inode 12345"):
        designators.resolve("12345", snapshot())


def test_open_designated_of_a_gone_pid_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no such process"):
        designators.open_designated("@999999999")


def test_a_registered_name_resolves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIDNS_STATE_DIR", str(tmp_path / "state"))
    Registry().reserve("probe").commit(os.getpid(), [OWN])
    assert designators.designated_inode("probe") == OWN


def test_a_prefix_resolver_extends_every_command(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, str]] = []

    def resolver(text: str, proc: str) -> int:
        asked.append((text, proc))
        if text != "test:web":
            raise BadDesignator(f"{text}: no such thing")
        return OWN

    monkeypatch.setitem(designators.PREFIXES, "test", resolver)
    assert designators.resolve("test:web", snapshot()).id.ino == OWN
    assert asked == [("test:web", "/proc")]
    with pytest.raises(BadDesignator, match="no such thing"):
        designators.designated_inode("test:db")


def test_every_container_prefix_reaches_the_container_resolver() -> None:
    from pidns.containers import PREFIXES as CONTAINERS

    assert {f"{kind}:" for kind in designators.PREFIXES} == set(CONTAINERS)
