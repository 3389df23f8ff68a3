"""The runtimes' own state files: names, pods and recorded pids. Root-only on most hosts; no daemon.

Where each runtime keeps what pidns reads (only metadata the runtime wrote, never anything inside
a container's root filesystem):
  docker      DOCKER_ROOT/containers/ID/config.v2.json       Name, State.Pid, State.Running,
                                                             Config.Labels (dockershim pods)
  podman      GRAPH/DRIVER-containers/containers.json        names (containers/storage's own list)
   and cri-o  GRAPH/DRIVER-containers/ID/userdata/config.json  annotations: io.container.manager=libpod
                                                             for podman; io.kubernetes.* for CRI-O
              RUNROOT/DRIVER-containers/ID/userdata/pidfile  the container's init pid
  containerd  STATE/io.containerd.runtime.v2.task/NS/ID/config.json   the task's bundle: CRI
              (and .../io.containerd.runtime.v1.linux/...)            annotations, cgroupsPath
              STATE/.../NS/ID/init.pid                                the init's pid
  machined    /run/systemd/machines/NAME                      LEADER=pid, SCOPE=unit

Each location is configurable with an environment variable holding a ':'-separated list
(Roots.from_env); the defaults include where k3s, microk8s and docker's own containerd put them.
A pid read here is only a claim: pidns.containers.live.verify checks it against the kernel.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

ENV = {
    "docker": "PIDNS_DOCKER_ROOT",
    "storage": "PIDNS_CONTAINERS_STORAGE",
    "runroot": "PIDNS_CONTAINERS_RUNROOT",
    "containerd": "PIDNS_CONTAINERD_STATE",
    "machines": "PIDNS_MACHINES_DIR",
}
_DEFAULTS = {
    "docker": ("/var/lib/docker",),
    "storage": ("/var/lib/containers/storage",),
    "runroot": ("/run/containers/storage",),
    "containerd": (
        "/run/containerd",
        "/run/k3s/containerd",
        "/var/snap/microk8s/common/run/containerd",
        "/run/docker/containerd/daemon",
    ),
    "machines": ("/run/systemd/machines",),
}
_TASK_DIRS = ("io.containerd.runtime.v2.task", "io.containerd.runtime.v1.linux")


@dataclass(frozen=True, slots=True)
class Roots:
    """Where to look for each runtime's state."""

    docker: tuple[str, ...] = _DEFAULTS["docker"]
    storage: tuple[str, ...] = _DEFAULTS["storage"]
    runroot: tuple[str, ...] = _DEFAULTS["runroot"]
    containerd: tuple[str, ...] = _DEFAULTS["containerd"]
    machines: tuple[str, ...] = _DEFAULTS["machines"]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Roots:
        env = os.environ if env is None else env
        values: dict[str, tuple[str, ...]] = {}
        for key, var in ENV.items():
            given = env.get(var)
            values[key] = (
                tuple(p for p in given.split(":") if p) if given else _defaults_for(key, env)
            )
        return cls(**values)


def _defaults_for(key: str, env: Mapping[str, str]) -> tuple[str, ...]:
    """The system-wide defaults, plus rootless podman's per-user ones for a non-root caller."""
    found = _DEFAULTS[key]
    if os.geteuid() != 0:
        home = env.get("HOME")
        if key == "storage" and home:
            found = (*found, f"{home}/.local/share/containers/storage")
        if key == "runroot":
            found = (*found, f"/run/user/{os.geteuid()}/containers")
    return found


@dataclass(slots=True)
class StateRecord:
    """One container as a runtime's state describes it."""

    runtime: str  # docker | podman | crio | containerd | machine
    id: str
    name: str | None = None
    pod: str | None = None
    pod_namespace: str | None = None
    pod_uid: str | None = None
    sandbox: bool = False  # a pod's sandbox (pause) container
    namespace: str | None = None  # containerd's namespace ("default", "k8s.io", "moby")
    pid: int | None = None  # the init's host pid, as recorded
    pid_written: float | None = None  # when the file holding `pid` was last written (mtime)
    cgroups_path: str | None = None  # the OCI spec's linux.cgroupsPath
    running: bool | None = None  # what the state says, when it says
    source: str = ""  # the file it was read from


@dataclass(slots=True)
class Unreadable:
    """State that exists but could not be read, and why: reported, never silently dropped."""

    runtime: str
    path: str
    reason: str


@dataclass(slots=True)
class StateReader:
    """Reads state files on demand and keeps what it read for the rest of the command."""

    roots: Roots = field(default_factory=Roots.from_env)
    unreadable: list[Unreadable] = field(default_factory=list)
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict)

    # -- low-level ----------------------------------------------------------------------------

    def _note(self, runtime: str, path: str, err: OSError) -> None:
        reason = "permission denied (run as root)" if err.errno == errno.EACCES else err.strerror
        if not any(u.path == path for u in self.unreadable):
            self.unreadable.append(Unreadable(runtime, path, reason or str(err)))

    def _json(self, runtime: str, path: str) -> tuple[Any, float] | None:
        """(parsed JSON, mtime) of a file; None when absent, unreadable (noted) or corrupt."""
        key = ("json", path)
        if key in self._cache:
            cached: tuple[Any, float] | None = self._cache[key]
            return cached
        result: tuple[Any, float] | None = None
        try:
            with open(path, "rb") as f:
                result = (json.loads(f.read()), os.fstat(f.fileno()).st_mtime)
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as err:
            self._note(runtime, path, err)
        except ValueError:
            pass  # written half-way, or not the runtime's format: no claim either way
        self._cache[key] = result
        return result

    def _listdir(self, runtime: str, path: str) -> list[str]:
        key = ("dir", path)
        if key not in self._cache:
            try:
                self._cache[key] = sorted(os.listdir(path))
            except (FileNotFoundError, NotADirectoryError):
                self._cache[key] = []
            except OSError as err:
                self._note(runtime, path, err)
                self._cache[key] = []
        names: list[str] = self._cache[key]
        return names

    def _pidfile(self, runtime: str, path: str) -> tuple[int, float] | None:
        try:
            with open(path, "rb") as f:
                text = f.read().strip()
                written = os.fstat(f.fileno()).st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as err:
            self._note(runtime, path, err)
            return None
        return (int(text), written) if text.isdigit() else None

    # -- docker ------------------------------------------------------------------------------

    def docker(self, ident: str) -> StateRecord | None:
        for root in self.roots.docker:
            path = f"{root}/containers/{ident}/config.v2.json"
            loaded = self._json("docker", path)
            if loaded is not None:
                return _docker_record(ident, loaded[0], loaded[1], path)
        return None

    def docker_all(self) -> Iterator[StateRecord]:
        for root in self.roots.docker:
            for ident in self._listdir("docker", f"{root}/containers"):
                path = f"{root}/containers/{ident}/config.v2.json"
                loaded = self._json("docker", path)
                if loaded is not None:
                    yield _docker_record(ident, loaded[0], loaded[1], path)

    # -- containers/storage: podman and CRI-O ------------------------------------------------

    def _storage_lists(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(graph root, driver dir, entry) for every container containers/storage lists."""
        key = ("storage", "all")
        if key in self._cache:
            cached: list[tuple[str, str, dict[str, Any]]] = self._cache[key]
            return cached
        found: list[tuple[str, str, dict[str, Any]]] = []
        for root in self.roots.storage:
            for name in self._listdir("podman", root):
                if not name.endswith("-containers"):
                    continue
                loaded = self._json("podman", f"{root}/{name}/containers.json")
                if loaded is None or not isinstance(loaded[0], list):
                    continue
                found.extend((root, name, e) for e in loaded[0] if isinstance(e, dict))
        self._cache[key] = found
        return found

    def storage(self, ident: str) -> StateRecord | None:
        for root, driver, entry in self._storage_lists():
            if entry.get("id") == ident:
                return self._storage_record(root, driver, entry)
        return None

    def storage_all(self) -> Iterator[StateRecord]:
        for root, driver, entry in self._storage_lists():
            record = self._storage_record(root, driver, entry)
            if record is not None:
                yield record

    def _storage_record(self, root: str, driver: str, entry: dict[str, Any]) -> StateRecord | None:
        ident = entry.get("id")
        if not isinstance(ident, str):
            return None
        names = entry.get("names") or []
        config_path = f"{root}/{driver}/{ident}/userdata/config.json"
        loaded = self._json("podman", config_path)
        spec = loaded[0] if loaded is not None and isinstance(loaded[0], dict) else {}
        notes = _annotations(spec)
        pid = None
        for runroot in self.roots.runroot:
            pid = self._pidfile("podman", f"{runroot}/{driver}/{ident}/userdata/pidfile")
            if pid is not None:
                break
        record = StateRecord(
            runtime="podman",
            id=ident,
            name=names[0] if names and isinstance(names[0], str) else None,
            pid=pid[0] if pid else None,
            pid_written=pid[1] if pid else None,
            cgroups_path=_cgroups_path(spec),
            source=config_path,
        )
        if notes.get("io.container.manager") != "libpod" and (
            "io.kubernetes.cri-o.ContainerType" in notes or "io.kubernetes.pod.name" in notes
        ):
            record.runtime = "crio"
            record.name = notes.get("io.kubernetes.container.name") or record.name
            record.pod = notes.get("io.kubernetes.pod.name")
            record.pod_namespace = notes.get("io.kubernetes.pod.namespace")
            record.pod_uid = notes.get("io.kubernetes.pod.uid")
            record.sandbox = notes.get("io.kubernetes.cri-o.ContainerType") == "sandbox"
            if record.sandbox:
                record.name = None
        elif loaded is None and not any(u.path == config_path for u in self.unreadable):
            # containers/storage also lists build containers and other tools' ones; only a
            # container with a runtime spec is a runtime's container.
            return None
        return record

    # -- containerd ------------------------------------------------------------------------

    def containerd(self, ident: str, namespace: str | None = None) -> StateRecord | None:
        for record in self.containerd_all():
            if record.id == ident and (namespace is None or record.namespace == namespace):
                return record
        return None

    def containerd_all(self) -> list[StateRecord]:
        key = ("containerd", "all")
        if key in self._cache:
            cached: list[StateRecord] = self._cache[key]
            return cached
        found = []
        for root in self.roots.containerd:
            for tasks in _TASK_DIRS:
                base = f"{root}/{tasks}"
                for ns in self._listdir("containerd", base):
                    for ident in self._listdir("containerd", f"{base}/{ns}"):
                        record = self._containerd_record(f"{base}/{ns}/{ident}", ns, ident)
                        if record is not None:
                            found.append(record)
        self._cache[key] = found
        return found

    def _containerd_record(self, bundle: str, ns: str, ident: str) -> StateRecord | None:
        loaded = self._json("containerd", f"{bundle}/config.json")
        if loaded is None or not isinstance(loaded[0], dict):
            return None
        spec = loaded[0]
        notes = _annotations(spec)
        pid = self._pidfile("containerd", f"{bundle}/init.pid")
        kind = notes.get("io.kubernetes.cri.container-type")
        record = StateRecord(
            runtime="containerd",
            id=ident,
            name=notes.get("io.kubernetes.cri.container-name") or notes.get("nerdctl/name"),
            pod=notes.get("io.kubernetes.cri.sandbox-name"),
            pod_namespace=notes.get("io.kubernetes.cri.sandbox-namespace"),
            pod_uid=notes.get("io.kubernetes.cri.sandbox-uid"),
            sandbox=kind == "sandbox",
            namespace=ns,
            pid=pid[0] if pid else None,
            pid_written=pid[1] if pid else None,
            cgroups_path=_cgroups_path(spec),
            source=f"{bundle}/config.json",
        )
        return record

    def sandbox_uid(self, sandbox_id: str) -> str | None:
        """The pod UID of a CRI sandbox, for containers whose bundles do not repeat it."""
        record = self.containerd(sandbox_id)
        return record.pod_uid if record is not None else None

    # -- machined ------------------------------------------------------------------------------

    def machine(self, name: str) -> StateRecord | None:
        for root in self.roots.machines:
            path = f"{root}/{name}"
            try:
                with open(path, "rb") as f:
                    text = f.read().decode(errors="replace")
                    written = os.fstat(f.fileno()).st_mtime
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue
            except OSError as err:
                self._note("machine", path, err)
                continue
            fields = dict(
                line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#"
            )
            leader = fields.get("LEADER", "")
            return StateRecord(
                runtime="machine",
                id=name,
                name=name,
                pid=int(leader) if leader.isdigit() else None,
                pid_written=written,
                cgroups_path=fields.get("SCOPE"),
                source=path,
            )
        return None

    def machine_names(self) -> list[str]:
        names: list[str] = []
        for root in self.roots.machines:
            names.extend(n for n in self._listdir("machine", root) if not n.startswith("unit:"))
        return names

    # -- reporting ---------------------------------------------------------------------------

    def why_not(self, runtime: str) -> str | None:
        """One line on what of runtime's state could not be read, or None."""
        wanted = {"crio": "podman", "cri": "containerd"}.get(runtime, runtime)
        bad = [u for u in self.unreadable if u.runtime == wanted]
        if not bad:
            return None
        first = bad[0]
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        return f"{runtime}'s state in {first.path}{more} is unreadable: {first.reason}"

    def searched(self, runtime: str) -> str:
        places = {
            "docker": self.roots.docker,
            "podman": self.roots.storage,
            "crio": self.roots.storage,
            "containerd": self.roots.containerd,
            "k8s": self.roots.containerd + self.roots.storage,
            "machine": self.roots.machines,
        }.get(runtime, ())
        return ", ".join(places)


def _docker_record(ident: str, data: Any, written: float, path: str) -> StateRecord:
    data = _dict(data)
    state = _dict(data.get("State"))
    labels = _dict(_dict(data.get("Config")).get("Labels"))
    name = data.get("Name")
    pid = state.get("Pid")
    record = StateRecord(
        runtime="docker",
        id=ident,
        name=name.lstrip("/") if isinstance(name, str) and name else None,
        pid=pid if isinstance(pid, int) and pid > 0 else None,
        pid_written=written,
        running=bool(state.get("Running")),
        source=path,
    )
    if "io.kubernetes.pod.name" in labels:  # dockershim / cri-dockerd
        record.pod = labels.get("io.kubernetes.pod.name")
        record.pod_namespace = labels.get("io.kubernetes.pod.namespace")
        record.pod_uid = labels.get("io.kubernetes.pod.uid")
        record.sandbox = labels.get("io.kubernetes.docker.type") == "podsandbox"
        record.name = None if record.sandbox else labels.get("io.kubernetes.container.name")
    return record


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _annotations(spec: Any) -> dict[str, str]:
    notes = spec.get("annotations") if isinstance(spec, dict) else None
    if not isinstance(notes, dict):
        return {}
    return {k: v for k, v in notes.items() if isinstance(k, str) and isinstance(v, str)}


def _cgroups_path(spec: Any) -> str | None:
    with contextlib.suppress(AttributeError, TypeError):
        path = spec["linux"]["cgroupsPath"]
        return path if isinstance(path, str) and path else None
    return None
