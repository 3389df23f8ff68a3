"""The exporter's collector: one snapshot of the proc tree becomes every series of one scrape.

Each scrape reads one snapshot (reused for `min_interval` seconds, so that several scrapers
share it) and turns it into metric families. Labels are bounded: a namespace inode, its level and
what names it (container, pod, `pidns run --name`); never a pid, which would make a series per
process.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from pidns.containers import Labels, label
from pidns.export.cgroups import PidsLimit, PidsLimits, find_hierarchy, task_cgroup
from pidns.export.events import EventCounter, boottime
from pidns.ids import TaskId
from pidns.listing import name_namespaces, ordered, reaping, record
from pidns.model import PidNamespace, Snapshot, Task

INITIAL_PID_NS = 4026531836  # PROC_PID_INIT_INO: the inode of the initial PID namespace
REAP_GRACE = 5.0  # s a zombie child of pid 1 may wait before init counts as not reaping
STATES = ("R", "S", "D", "T", "t", "Z", "I")  # always exported (0 when none); others when seen
CONTAINER_LABELS = ("runtime", "container_id", "container", "pod", "pod_namespace")


# kube-state-metrics' container_id prefix per runtime (the kubelet's CRI runtime names)
_ID_SCHEME = {"crio": "cri-o"}


def _container_labels(labels: Labels, ns: PidNamespace) -> dict[str, str]:
    """The container and pod a namespace belongs to (or was made inside): runtime,
    container_id (as `containerd://…`, `docker://…`: the form kube-state-metrics gives, so PromQL
    can join on it), container, pod, pod_namespace; empty where there is none (Prometheus treats
    an empty label as absent)."""
    found = labels.by_ns.get(ns.ino)
    if found is None:
        return dict.fromkeys(CONTAINER_LABELS, "")
    return {
        "runtime": found.runtime,
        "container_id": f"{_ID_SCHEME.get(found.runtime, found.runtime)}://{found.id}",
        "container": found.name or "",
        "pod": found.pod or "",
        "pod_namespace": found.pod_namespace or "",
    }


@dataclass(slots=True)
class Collection:
    """What one snapshot gave: the metric families and `pidns ls --json`'s records."""

    families: list[Metric]
    namespaces_json: bytes
    taken: float  # time.monotonic() when it was read
    namespaces: int


@dataclass(slots=True)
class _Tally:
    states: Counter[str] = field(default_factory=Counter)
    threads: int = 0
    oldest_zombie: float = 0.0


class Exporter:
    """A prometheus_client collector over the proc tree at `proc`."""

    def __init__(
        self,
        proc: str = "/proc",
        min_interval: float = 5.0,
        events: EventCounter | None = None,
        cgroup_root: str = "/sys/fs/cgroup",
    ) -> None:
        self.proc = proc
        self.min_interval = min_interval
        self.events = events
        hierarchy = find_hierarchy(cgroup_root)
        self.limits = PidsLimits(hierarchy, proc) if hierarchy is not None else None
        self._lock = threading.Lock()
        self._cached: Collection | None = None
        self._zombie_since: dict[TaskId, float] = {}
        self._scrapes = 0
        self._hz = os.sysconf("SC_CLK_TCK")

    # -- prometheus_client's side ------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        return self.current().families

    def current(self) -> Collection:
        """The cached collection, or a new one when it is older than min_interval."""
        with self._lock:
            cached = self._cached
            if cached is None or time.monotonic() - cached.taken >= self.min_interval:
                cached = self._cached = self._collect()
            return cached

    # -- one scrape ----------------------------------------------------------------------------

    def _collect(self) -> Collection:
        from pidns.procfs.snapshot import snapshot

        started = time.perf_counter()
        taken = time.monotonic()
        since = boottime()
        snap = snapshot(self.proc, cmdlines=False)  # only the inits' are shown
        name_namespaces(snap)
        labels = label(snap)  # container names: cgroup paths and the runtimes' state files
        now = boottime()
        epoch_of_boot = time.time() - now
        if self.events is not None and snap.root is not None and snap.root.ino != INITIAL_PID_NS:
            self.events.close()  # its host pids are not this tree's numbers
            self.events = None

        tallies: dict[int, _Tally] = {ns.ino: _Tally() for ns in snap.namespaces.values()}
        unreadable = 0
        zombie_age_by_parent: dict[int, float] = {}
        zombie_since: dict[TaskId, float] = {}
        for task in snap.tasks.values():
            if task.ns_ino is None or task.ns_ino not in tallies:
                unreadable += 1
                continue
            tally = tallies[task.ns_ino]
            tally.states[task.state] += 1
            # a zombie leader is dead itself; its num_threads still counts it
            tally.threads += task.num_threads - 1 if task.state == "Z" else task.num_threads
            if task.state == "Z":
                at = self._since(task, now)
                zombie_since[task.identity] = at
                age = max(now - at, 0.0)
                tally.oldest_zombie = max(tally.oldest_zombie, age)
                zombie_age_by_parent[task.ppid] = max(zombie_age_by_parent.get(task.ppid, 0), age)
        self._zombie_since = zombie_since
        self._scrapes += 1

        info = InfoMetricFamily(
            "pidns_namespace",
            "A PID namespace: its parent, level, init's command name, container, pod and name.",
            labels=["ns"],
        )
        tasks = GaugeMetricFamily(
            "pidns_namespace_tasks",
            "Processes (thread-group leaders) living in the namespace itself, by state.",
            labels=["ns", "state"],
        )
        threads = GaugeMetricFamily(
            "pidns_namespace_threads",
            "Threads of the processes living in the namespace itself.",
            labels=["ns"],
        )
        zombies = GaugeMetricFamily(
            "pidns_namespace_zombies_oldest_age_seconds",
            "How long the namespace's oldest zombie has been one (0 when it has none).",
            labels=["ns"],
            unit="seconds",
        )
        reaps = GaugeMetricFamily(
            "pidns_namespace_init_reaps",
            f"1 when the namespace's pid 1 reaps its children; 0 when a zombie child of it is "
            f"older than {REAP_GRACE:g} s.",
            labels=["ns"],
        )
        started_at = GaugeMetricFamily(
            "pidns_namespace_start_time_seconds",
            "When the namespace's init started, in seconds since the Unix epoch.",
            labels=["ns"],
            unit="seconds",
        )
        pids_max = GaugeMetricFamily(
            "pidns_namespace_pids_max",
            "pids.max of the nearest cgroup with a pids limit at or above the namespace's init.",
            labels=["ns"],
        )
        pids_current = GaugeMetricFamily(
            "pidns_namespace_pids_current",
            "pids.current of that same cgroup.",
            labels=["ns"],
        )
        limits = self._limits(snap)
        order = ordered(snap)
        for ns in order:
            key = str(ns.ino)
            init = snap.tasks.get(ns.init) if ns.init is not None else None
            described = {
                "parent_ns": str(ns.parent.ino) if ns.parent else "",
                "level": str(ns.level),
                "init_comm": init.comm if init else "",
                **_container_labels(labels, ns),
                "name": ns.name or "",
            }
            info.add_metric([key], described)
            tally = tallies.get(ns.ino, _Tally())
            for state in sorted(set(STATES) | set(tally.states)):
                tasks.add_metric([key, state], tally.states.get(state, 0))
            threads.add_metric([key], tally.threads)
            zombies.add_metric([key], round(tally.oldest_zombie, 3))
            if init is not None:
                late = zombie_age_by_parent.get(init.host_pid, 0.0) > REAP_GRACE
                reaps.add_metric([key], 0 if late else 1)
                started_at.add_metric([key], round(epoch_of_boot + init.start_time / self._hz, 2))
            limit = limits.get(ns.ino)
            if limit is not None:
                pids_max.add_metric([key], limit.max)
                pids_current.add_metric([key], limit.current)
        families: list[Metric] = [
            info,
            tasks,
            threads,
            zombies,
            reaps,
            started_at,
            pids_max,
            pids_current,
        ]
        if self.events is not None:
            families.extend(self._counters(snap, order, since, zombie_since))
        families.append(
            GaugeMetricFamily(
                "pidns_scrape_unreadable_tasks",
                "Processes whose namespace could not be read (ns/pid needs ptrace access).",
                value=unreadable,
            )
        )
        records = _records(snap, order, labels)
        families.append(
            GaugeMetricFamily(
                "pidns_scrape_duration_seconds",
                "Seconds the exporter took to read the proc tree and build this scrape.",
                value=round(time.perf_counter() - started, 6),
                unit="seconds",
            )
        )
        return Collection(families, records, taken, len(snap.namespaces))

    def _since(self, task: Task, now: float) -> float:
        """When the zombie `task` exited, as closely as the exporter knows: the first time a
        scrape decided it; else the proc connector's exit event; else (in the first scrape)
        its start time, an upper bound of its age; else now, the first scrape to see it."""
        known = self._zombie_since.get(task.identity)
        if known is not None:
            return known
        started = task.start_time / self._hz
        if self.events is not None:
            exited = self.events.exit_time(task.host_pid)
            if exited is not None and exited >= started:
                return exited
        return started if self._scrapes == 0 else now

    def _counters(
        self,
        snap: Snapshot,
        order: list[PidNamespace],
        since: float,
        zombie_since: dict[TaskId, float],
    ) -> list[Metric]:
        assert self.events is not None
        events = self.events
        events.seed((t.host_pid, t.ns_ino) for t in snap.tasks.values() if t.ns_ino is not None)
        alive = {ns.ino for ns in snap.namespaces.values()}
        events.prune(alive, {key.pid for key in zombie_since}, since, set(snap.tasks))
        forks_by_ns, exits_by_ns = events.counts()
        forks = CounterMetricFamily(
            "pidns_namespace_forks",
            "Tasks (processes and threads) created in the namespace while the exporter ran.",
            labels=["ns"],
        )
        exits = CounterMetricFamily(
            "pidns_namespace_exits",
            "Tasks (processes and threads) of the namespace that exited while the exporter ran.",
            labels=["ns"],
        )
        for ns in order:
            forks.add_metric([str(ns.ino)], forks_by_ns.get(ns.ino, 0))
            exits.add_metric([str(ns.ino)], exits_by_ns.get(ns.ino, 0))
        lost = CounterMetricFamily(
            "pidns_export_event_overflows",
            "Times the kernel dropped fork/exit events because the exporter fell behind "
            "(the fork and exit counters are low by what was dropped).",
            value=events.overflows,
        )
        return [forks, exits, lost]

    def _limits(self, snap: Snapshot) -> dict[int, PidsLimit]:
        if self.limits is None:
            return {}
        found: dict[int, PidsLimit] = {}
        by_path: dict[str, PidsLimit | None] = {}
        fd = os.open(self.proc, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for ns in snap.namespaces.values():
                if ns.init is None:
                    continue
                path = task_cgroup(fd, ns.init, self.limits.hierarchy)
                if path is None:
                    continue
                if path not in by_path:
                    by_path[path] = self.limits.limit(path)
                limit = by_path[path]
                if limit is not None:
                    found[ns.ino] = limit
        finally:
            os.close(fd)
        return found


def _records(snap: Snapshot, order: list[PidNamespace], labels: Labels) -> bytes:
    """`pidns ls --json`, byte for byte."""
    health = reaping(snap)
    records = [record(snap, ns, labels, health) for ns in order]
    return (json.dumps(records, separators=(",", ":")) + "\n").encode()
