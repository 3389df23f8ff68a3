"""Container designators -> the PID namespace inode they name.

  docker:NAME|ID-PREFIX        podman:NAME|ID-PREFIX       crio:ID-PREFIX
  containerd:[NAMESPACE/]ID-PREFIX                         lxc:NAME        machine:NAME
  k8s:[NAMESPACE/]POD[/CONTAINER]   k8s://NAMESPACE/POD/CONTAINER   k8s-pod:UID
  cgroup:PATH                  the innermost namespace holding every task of that cgroup

Tiers, in order, each one optional: (1) the cgroups of live tasks (anyone may read them: gives
the runtime, the container id and the pod UID); (2) the runtimes' state files (root: names and
pods; every recorded pid verified, see live.py); (3) the runtime's CLI, when enabled. An unknown
container is a usage error (exit 2) naming what was searched; a known one with no live task is
ContainerNotRunning (exit 1); an id prefix matching several containers lists them (exit 2).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from pidns.containers import runtime_cli
from pidns.containers.cgroup import CgroupMatch, holds, match, parse_cgroup
from pidns.containers.live import LiveContainer, Scan, Verified, common_namespace, scan, verify
from pidns.containers.nspawn import COMM as NSPAWN
from pidns.containers.nspawn import machine_name
from pidns.containers.state import Roots, StateReader, StateRecord
from pidns.errors import AccessDenied, BadDesignator, PidnsError
from pidns.procfs.parse import parse_cmdline, parse_stat

PREFIXES = (
    "docker:",
    "podman:",
    "containerd:",
    "crio:",
    "k8s:",
    "k8s-pod:",
    "machine:",
    "lxc:",
    "cgroup:",
)
RUNTIMES = ("docker", "podman", "containerd", "crio")
# Which cgroup layouts may hold a runtime's containers ("cri": a kubelet cgroupfs path).
_LAYOUTS = {
    "docker": ("docker", "cri"),
    "podman": ("podman",),
    "containerd": ("containerd", "cri"),
    "crio": ("crio", "cri"),
}


class ContainerNotRunning(PidnsError):
    """The designator names a container the runtime knows, but none of its tasks is alive."""


def prefix_of(text: str) -> str | None:
    for prefix in PREFIXES:
        if text.startswith(prefix):
            return prefix
    return None


@dataclass(slots=True)
class Candidate:
    id: str
    runtime: str
    record: StateRecord | None = None
    live: LiveContainer | None = None

    @property
    def shown(self) -> str:
        name = self.record.name if self.record is not None else None
        return f"{self.id[:12]} ({name})" if name else self.id[:12]


@dataclass(slots=True)
class Resolver:
    text: str
    proc: str = "/proc"
    state: StateReader = field(default_factory=StateReader)
    _scan: Scan | None = None

    def scan(self) -> Scan:
        if self._scan is None:
            self._scan = scan(self.proc)
        return self._scan

    # -- errors ----------------------------------------------------------------------------

    def unknown(self, what: str, runtime: str, cgroups: bool = True) -> BadDesignator:
        searched = []
        if cgroups:
            searched.append(f"the cgroups of {self.scan().tasks} processes")
        places = self.state.searched(runtime)
        if places:
            searched.append(f"state files in {places}")
        message = f"{self.text!r}: no {what}; searched {' and '.join(searched)}"
        why = self.state.why_not(runtime)
        if why is not None:
            message += f"; {why}"
            if runtime in RUNTIMES and not runtime_cli.enabled():
                message += " (or ask the runtime with --runtime-cli)"
        return BadDesignator(message)

    def not_running(self, shown: str, reason: str) -> PidnsError:
        if "not readable" in reason:  # running, but its namespace is hidden from this caller
            return AccessDenied(f"{self.text!r} ({shown}) is running, but {reason}")
        return ContainerNotRunning(f"{self.text!r} ({shown}): not running ({reason})")

    # -- finding a namespace ------------------------------------------------------------------

    def namespace(self, cand: Candidate) -> int:
        """The candidate's namespace: through its live cgroup, else its verified recorded pid."""
        if cand.live is None:
            cand.live = self._live_by_id(cand.id, cand.record)
        if cand.live is not None:
            found = self.scan().namespace_of(cand.live)
            if isinstance(found, int):
                return found
            raise self.not_running(cand.shown, found)
        reason = "no live task is in its cgroup"
        record = cand.record
        if record is not None and record.pid:
            if record.running is False:
                raise self.not_running(cand.shown, f"{record.source} says it is stopped")
            checked = verify(self.proc, record.pid, record.pid_written, _in(record))
            if isinstance(checked, Verified):
                return checked.ns
            reason = checked
        raise self.not_running(cand.shown, reason)

    def _live_by_id(self, ident: str, record: StateRecord | None) -> LiveContainer | None:
        scanned = self.scan()
        for (_runtime, found_id), live in scanned.containers.items():
            if found_id == ident:
                return live
        if record is not None and record.cgroups_path:  # a ctr container: /NAMESPACE/ID
            pids = [p for p, data in scanned.cgroups.items() if holds(data, record.cgroups_path)]
            if pids:
                m = match(scanned.cgroups[pids[0]])
                return LiveContainer(m or CgroupMatch(record.runtime, ident), pids)
        return None

    # -- runtimes --------------------------------------------------------------------------

    def by_runtime(self, runtime: str, key: str, namespace: str | None = None) -> int:
        if not key:
            raise BadDesignator(f"{self.text!r}: give a container name or id after '{runtime}:'")
        records = list(self._records(runtime, namespace))
        exact = [r for r in records if key in (r.name, r.id)]
        cands: dict[str, Candidate] = {
            r.id: Candidate(r.id, r.runtime, record=r)
            for r in (exact or [r for r in records if r.id.startswith(key)])
        }
        if not exact:
            for (layout, ident), live in self.scan().containers.items():
                if layout in _LAYOUTS[runtime] and ident.startswith(key):
                    if ident in cands:
                        cands[ident].live = live
                    elif namespace is None or runtime != "containerd":
                        cands[ident] = Candidate(ident, runtime, live=live)
        if not cands and runtime_cli.enabled():
            return self.by_cli(runtime, key, namespace)
        if not cands:
            what = f"{runtime} container named or with an id starting {key!r}"
            if namespace:
                what += f" in namespace {namespace!r}"
            raise self.unknown(what, runtime)
        if len(cands) > 1:
            listed = ", ".join(c.shown for c in sorted(cands.values(), key=lambda c: c.id))
            raise BadDesignator(
                f"{self.text!r}: the id prefix {key!r} matches {len(cands)} {runtime} "
                f"containers: {listed}; give more of the id"
            )
        return self.namespace(next(iter(cands.values())))

    def _records(self, runtime: str, namespace: str | None) -> list[StateRecord]:
        if runtime == "docker":
            return list(self.state.docker_all())
        if runtime in ("podman", "crio"):
            return [r for r in self.state.storage_all() if r.runtime == runtime]
        return [
            r for r in self.state.containerd_all() if namespace is None or r.namespace == namespace
        ]

    def by_cli(self, runtime: str, key: str, namespace: str | None) -> int:
        answer = runtime_cli.ask(runtime, key, namespace)
        if isinstance(answer, str):
            raise self.unknown(
                f"{runtime} container named or with an id starting {key!r} ({answer})", runtime
            )
        shown = f"{answer.id[:12]} ({answer.name})" if answer.name else answer.id[:12]
        if answer.pid <= 0:
            raise self.not_running(shown, f"{answer.tool} says it has no pid")
        checked = verify(self.proc, answer.pid, None, lambda data: _holds_id(data, answer.id))
        if isinstance(checked, str):
            raise self.not_running(shown, checked)
        return checked.ns

    # -- kubernetes ------------------------------------------------------------------------

    def k8s(self, rest: str) -> int:
        if rest.startswith("//"):
            parts = rest[2:].split("/")
            if len(parts) != 3 or not all(parts):
                raise BadDesignator(f"{self.text!r}: write k8s://NAMESPACE/POD/CONTAINER")
        else:
            parts = rest.split("/")
            if not all(parts) or len(parts) > 3:
                raise BadDesignator(f"{self.text!r}: write k8s:[NAMESPACE/]POD[/CONTAINER]")
            if len(parts) == 1:
                parts = ["default", parts[0]]
        pod_ns, pod = parts[0], parts[1]
        container = parts[2] if len(parts) == 3 else None
        records = [
            r
            for r in self._cri_records()
            if r.pod == pod and (r.pod_namespace or "default") == pod_ns
        ]
        if not records:
            raise self.unknown(f"pod {pod!r} in namespace {pod_ns!r}", "k8s", cgroups=False)
        where = f"pod {pod_ns}/{pod}"
        apps = [r for r in records if not r.sandbox]
        if container is not None:
            named = [r for r in apps if r.name == container]
            if not named:
                have = ", ".join(sorted({r.name or r.id[:12] for r in apps})) or "none"
                raise BadDesignator(
                    f"{self.text!r}: {where} has no container {container!r} (it has: {have})"
                )
            return self._newest_running(named)
        return self._one_namespace(where, records)

    def _cri_records(self) -> list[StateRecord]:
        found = [r for r in self.state.containerd_all() if r.pod is not None]
        found += [r for r in self.state.storage_all() if r.runtime == "crio"]
        found += [r for r in self.state.docker_all() if r.pod is not None]
        return found

    def _newest_running(self, records: list[StateRecord]) -> int:
        """A restarted container leaves its old attempt's state: the running one resolves."""
        errors: list[PidnsError] = []
        for record in records:
            try:
                return self.namespace(Candidate(record.id, record.runtime, record=record))
            except (ContainerNotRunning, AccessDenied) as err:
                errors.append(err)
        raise errors[0]

    def _one_namespace(self, where: str, records: list[StateRecord]) -> int:
        """A pod without a container named: its namespace when its containers share one (or
        it has one), else the list to choose from."""
        found: dict[int, list[StateRecord]] = {}
        errors: list[PidnsError] = []
        for record in records:
            try:
                ino = self.namespace(Candidate(record.id, record.runtime, record=record))
            except (ContainerNotRunning, AccessDenied) as err:
                errors.append(err)
                continue
            found.setdefault(ino, []).append(record)
        apps = {ino: rs for ino, rs in found.items() if any(not r.sandbox for r in rs)}
        choices = apps or found
        if not choices:
            raise errors[0] if errors else self.not_running(where, "no container has a task")
        if len(choices) == 1:
            return next(iter(choices))
        names = sorted(r.name or r.id[:12] for rs in choices.values() for r in rs if not r.sandbox)
        raise BadDesignator(
            f"{self.text!r}: the containers of {where} have {len(choices)} PID namespaces; "
            f"name one: {', '.join(names)}"
        )

    def k8s_pod(self, uid: str) -> int:
        uid = uid.lower().replace("_", "-")
        if not uid:
            raise BadDesignator(f"{self.text!r}: give the pod's UID after 'k8s-pod:'")
        lives = [lc for lc in self.scan().containers.values() if lc.match.pod_uid == uid]
        records = [r for r in self._cri_records() if r.pod_uid == uid]
        by_id = {r.id: r for r in records}
        found: dict[int, list[str]] = {}
        for live in lives:
            record = by_id.get(live.match.id)
            if record is None and self._all_pause(live):
                record = StateRecord(live.match.runtime, live.match.id, sandbox=True)
            ino = self.scan().namespace_of(live)
            if isinstance(ino, int):
                label = (
                    ""
                    if record is not None and record.sandbox
                    else (record.name if record is not None and record.name else live.match.id[:12])
                )
                found.setdefault(ino, []).append(label)
        if not found:
            if records:
                raise self.not_running(f"pod {uid}", "no task of it is in a kubepods cgroup")
            raise self.unknown(f"pod with UID {uid}", "k8s")
        apps = {ino: names for ino, names in found.items() if any(names)}
        choices = apps or found
        if len(choices) == 1:
            return next(iter(choices))
        listed = sorted(n for names in choices.values() for n in names if n)
        raise BadDesignator(
            f"{self.text!r}: the pod's containers have {len(choices)} PID namespaces; name one "
            f"(with k8s:NAMESPACE/POD/CONTAINER or its runtime's id): {', '.join(listed)}"
        )

    def _all_pause(self, live: LiveContainer) -> bool:
        """Without state, a pod's sandbox is known by what it runs: the pause process only."""
        for pid in live.pids:
            try:
                with open(f"{self.proc}/{pid}/comm", "rb") as f:
                    if f.read().strip() != b"pause":
                        return False
            except OSError:
                continue
        return True

    # -- machines, lxc, cgroups ------------------------------------------------------------

    def machine(self, name: str) -> int:
        if not name:
            raise BadDesignator(f"{self.text!r}: give a machine name after 'machine:'")
        record = self.state.machine(name)
        if record is not None and record.pid:
            checked = verify(self.proc, record.pid, record.pid_written, _in(record))
            if isinstance(checked, Verified):
                return checked.ns
        live = self.scan().containers.get(("machine", name))
        if live is not None:
            return self._live_ns(live, f"machine {name}")
        ino = self._nspawned(name)
        if ino is not None:
            return ino
        if record is not None:
            raise self.not_running(f"machine {name}", f"{record.source} is stale")
        err = self.unknown(f"machine named {name!r}", "machine")
        raise BadDesignator(f"{err}, and the systemd-nspawn processes' command lines")

    def _nspawned(self, name: str) -> int | None:
        """A machine nspawn did not register: the child of the nspawn process that names it."""
        nspawns: set[int] = set()
        parents: dict[int, int] = {}
        for entry in os.listdir(self.proc):
            if not entry.isdigit():
                continue
            try:
                with open(f"{self.proc}/{entry}/stat", "rb") as f:
                    stat = parse_stat(f.read())
            except (OSError, ValueError):
                continue
            parents[stat.pid] = stat.ppid
            if stat.comm == NSPAWN:
                try:
                    with open(f"{self.proc}/{entry}/cmdline", "rb") as f:
                        argv = parse_cmdline(f.read())
                except OSError:
                    continue
                if machine_name(argv) == name:
                    nspawns.add(stat.pid)
        for pid, ppid in sorted(parents.items()):
            if ppid not in nspawns:
                continue
            try:
                mine = os.stat(f"{self.proc}/{pid}/ns/pid").st_ino
                theirs = os.stat(f"{self.proc}/{ppid}/ns/pid").st_ino
            except OSError:
                continue
            if mine != theirs:
                return mine
        return None

    def lxc(self, name: str) -> int:
        if not name:
            raise BadDesignator(f"{self.text!r}: give a container name after 'lxc:'")
        live = self.scan().containers.get(("lxc", name))
        if live is None:
            raise self.unknown(f"LXC container named {name!r}", "lxc")
        return self._live_ns(live, f"lxc {name}")

    def cgroup(self, path: str) -> int:
        if not path.startswith("/"):
            raise BadDesignator(
                f"{self.text!r}: a cgroup path starts with '/', as in /proc/PID/cgroup"
            )
        path = path.rstrip("/") or "/"
        below = path + "/" if path != "/" else "/"
        pids = [
            pid
            for pid, data in self.scan().cgroups.items()
            if any(p == path or p.startswith(below) for _c, p in parse_cgroup(data))
        ]
        if not pids:
            raise BadDesignator(
                f"{self.text!r}: no task is in cgroup {path} or below it "
                f"(searched the cgroups of {self.scan().tasks} processes)"
            )
        found = common_namespace(self.proc, pids)
        if isinstance(found, str):
            raise PidnsError(f"{self.text!r}: cgroup {path}: {found}")
        return found

    def _live_ns(self, live: LiveContainer, shown: str) -> int:
        found = self.scan().namespace_of(live)
        if isinstance(found, str):
            raise self.not_running(shown, found)
        return found


def _holds_id(data: bytes, ident: str) -> bool:
    found = match(data)
    return found is not None and found.id == ident


def _in(record: StateRecord) -> Callable[[bytes], bool]:
    """The test a recorded pid's cgroup must pass to be that container's."""

    def check(data: bytes) -> bool:
        if _holds_id(data, record.id):
            return True
        return bool(record.cgroups_path) and holds(data, record.cgroups_path or "")

    return check


def resolve_designator(text: str, proc: str = "/proc", roots: Roots | None = None) -> int | None:
    """The PID namespace inode a container designator names; None when `text` has none of
    PREFIXES. Raises BadDesignator (exit 2: unknown, ambiguous, malformed) or a PidnsError
    (exit 1: ContainerNotRunning, unreadable)."""
    prefix = prefix_of(text)
    if prefix is None:
        return None
    rest = text[len(prefix) :]
    resolver = Resolver(text, proc, StateReader(roots if roots is not None else Roots.from_env()))
    kind = prefix[:-1]
    if kind in ("docker", "podman", "crio"):
        return resolver.by_runtime(kind, rest)
    if kind == "containerd":
        namespace, sep, key = rest.rpartition("/")
        return resolver.by_runtime("containerd", key if sep else rest, namespace or None)
    if kind == "k8s":
        return resolver.k8s(rest)
    if kind == "k8s-pod":
        return resolver.k8s_pod(rest)
    if kind == "machine":
        return resolver.machine(rest)
    if kind == "lxc":
        return resolver.lxc(rest)
    return resolver.cgroup(rest)
