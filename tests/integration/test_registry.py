"""Names given by `pidns run --name`: they resolve wherever --ns is accepted, show in `pidns ls`,
and die with the namespace; a stale entry whose pid was reused never resolves."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from pidns.names import Registry, start_time
from tests.integration.runtime_util import background, pidns

pytestmark = pytest.mark.root


def unique(stem: str) -> str:
    return f"{stem}-{os.getpid()}"


def test_name_resolves_everywhere_and_dies_with_the_namespace() -> None:
    name = unique("reg")
    with background("--name", name, "--nest", "2", "--", "sleep", "60") as run:
        inner = run.started["ns"][-1]
        assert run.started["name"] == name
        ps = pidns("ps", "--ns", name, "--json")
        assert ps.returncode == 0, ps.stderr
        assert {t["comm"] for t in json.loads(ps.stdout)} == {"pidns-init", "sleep"}
        assert all(t["ns"] == inner for t in json.loads(ps.stdout))
        translated = pidns("translate", "2", "--from", name, "--to", "host")
        assert translated.stdout.strip() == str(run.started["host_pid"])
        listed = {r["id"]: r["name"] for r in json.loads(pidns("ls", "--json").stdout)}
        assert listed[inner] == name
        assert Registry().lookup(name) is not None
        run.proc.terminate()
        run.finish()
    assert Registry().lookup(name) is None
    gone = pidns("ps", "--ns", name)
    assert gone.returncode == 2 and name in gone.stderr


def test_name_in_use_is_125() -> None:
    name = unique("busy")
    with background("--name", name, "--", "sleep", "60"):
        again = pidns("run", "--name", name, "--", "true")
        assert again.returncode == 125
        assert again.stderr.count("\n") == 1 and "already in use" in again.stderr


def test_name_of_a_killed_launcher_is_pruned_and_reusable() -> None:
    name = unique("killed")
    with background("--name", name, "--no-die-with-parent", "--", "sleep", "60") as run:
        run.proc.kill()
        run.proc.wait()
        os.kill(run.started["inits"][0], 9)  # the namespace now dies; its entry stays behind
    path = Registry().directory / f"{name}.json"
    assert path.exists()
    result = pidns("run", "--name", name, "--", "true")
    assert result.returncode == 0, result.stderr
    assert not path.exists()


def test_reused_pid_never_resolves() -> None:
    """An entry naming a live process (ours) from another life: wrong start time, or our start
    time but another namespace's inode. Neither resolves; both are pruned."""
    registry = Registry()
    registry.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    me, ns = os.getpid(), os.stat("/proc/self/ns/pid").st_ino
    when = start_time(me)
    assert when is not None
    for stem, entry in (
        ("reused", {"pid": me, "start_time": when + 1, "ns": ns}),
        ("moved", {"pid": me, "start_time": when, "ns": ns + 1}),
    ):
        name = unique(stem)
        path = registry.directory / f"{name}.json"
        path.write_text(json.dumps({"name": name, **entry}))
        result = pidns("ps", "--ns", name)
        assert result.returncode == 2 and "not a known namespace" in result.stderr
        assert not path.exists()


def test_sandbox_name_resolves() -> None:
    from pidns import Sandbox

    name = unique("sbx")
    with Sandbox(name=name) as sb:
        p = sb.spawn(["sleep", "60"], stdout=subprocess.DEVNULL)
        ps = json.loads(pidns("ps", "--ns", name, "--json").stdout)
        assert {t["host_pid"] for t in ps} == {sb.init_pids[-1], p.pid}
    assert Registry().lookup(name) is None
