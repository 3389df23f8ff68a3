"""`ps --json` writes its records directly: the text must be json.dumps of `record()`'s dicts."""

from __future__ import annotations

import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pidns.cli.ps import record, records_json
from pidns.containers import Container
from pidns.model import Snapshot
from tests.unit.test_model import snapshots

# What a proc tree can hand over: surrogate-escaped bytes, quotes, controls, non-ASCII.
TEXT = st.text(
    st.characters(codec="utf-8") | st.sampled_from(['"', "\\", "\n", "\x00", "\udcff", "é", "☃"]),
    max_size=12,
)
CONTAINERS = st.none() | st.builds(
    Container,
    runtime=st.sampled_from(["docker", "podman", "k8s"]),
    id=TEXT,
    name=st.none() | TEXT,
    pod=st.none() | TEXT,
    pod_namespace=st.none() | TEXT,
    pod_uid=st.none() | TEXT,
)


def reference(snap: Snapshot, containers: dict[int, Container], threads: bool) -> str:
    out = []
    for ns in snap.namespaces.values():
        for v in snap.views(ns, threads=threads):
            ino = v.task.ns_ino
            out.append(record(v, containers.get(ino) if ino is not None else None))
    return json.dumps(out, separators=(",", ":"))


# Drawing a field per task is slow on a loaded machine: no deadline, no speed check.
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots(), st.data())
def test_records_json_is_the_records_dumped(snap: Snapshot, data: st.DataObject) -> None:
    for pid, task in list(snap.tasks.items()):
        changed = snap.tasks[pid] = copy.copy(task)
        changed.comm = data.draw(TEXT)
        changed.state = data.draw(st.sampled_from(["S", "R", "Z", "D"]))
        changed.cmdline = data.draw(st.lists(TEXT, max_size=4))
        changed.euid = data.draw(st.integers(0, 2**32 - 1))
        changed.start_time = data.draw(st.integers(0, 2**63))
        changed.ns_ino = data.draw(st.sampled_from([task.ns_ino, None]))
        changed.tgid = data.draw(st.sampled_from([task.tgid, task.ppid]))
    containers = {}
    for ns in snap.namespaces.values():
        found = data.draw(CONTAINERS)
        if found is not None:
            containers[ns.ino] = found
    views = [v for ns in snap.namespaces.values() for v in snap.views(ns)]
    assert records_json(views, containers) == reference(snap, containers, threads=False)


def test_no_views_is_an_empty_list() -> None:
    assert records_json([], {}) == json.dumps([])
