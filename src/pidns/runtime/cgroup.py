"""Making (and removing) the cgroup of a `pidns run`: the one module that writes cgroup files.

`pidns run --memory/--memory-swap/--cpus/--cpuset/--pids-max/--virtualize` puts the namespaces it makes in a
cgroup of their own: one directory per hierarchy, made next to the launcher's own cgroup, with
the limits asked for written before anything runs in it. The first level's init moves itself in
(writing 0 to cgroup.procs files opened here, before any user namespace, so the kernel checks the
launcher's rights) before it forks anything, so every process of the namespaces is inside; the
launcher itself (and the helper that waits for the init, when there is one) stay outside.

Where: cgroup v1 (one hierarchy per controller, or a few together) gets `<own cgroup>/<name>`
in each hierarchy of memory, cpu, cpuacct, cpuset, pids and blkio (the ones not asked for only
account: a virtualised /proc reads them); a v2 hierarchy gets one directory, a child of the
launcher's cgroup when that is the root, else a sibling of it (v2 lets controllers be enabled
only for cgroups whose parent holds no process, and the launcher is in its own), with the
controllers the limits need enabled in the parent's cgroup.subtree_control. On a hybrid
machine (v1 controllers, a v2 hierarchy without any) the v2 directory still gives the
namespace its own pressure files. Rootless works where the directories are the user's: a
delegated v2 subtree (systemd's Delegate=yes: user@UID.service and what runs under it).
When only the launcher's own v2 cgroup is the user's (a delegated scope directly under a
root-owned slice: `systemd-run --user --scope -p Delegate=yes`), the launcher does what
runc, podman and systemd do there: it moves itself into a leaf of its own under that cgroup
(`<name>.launcher`), which can then enable controllers for its children, and the run's
directory goes beside the leaf. After the run the controllers it enabled are disabled again
and the launcher moves back; the janitor removes the leaf once it is empty (processes the
launcher started meanwhile, such as the view daemon, are in it until they end).

Removed after the run: by the launcher once the namespace is gone, and, should the launcher die
first (SIGKILL), by a small janitor process forked here that waits for every holder of a pipe to
go, then for the cgroup to empty, then removes it. The janitor can be killed too (the OOM killer,
a scope stopped with everything in it): each run also sweeps the directories it makes its own
beside, removing the empty `pidns-PID-…` ones left by launchers that are gone.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import time
from dataclasses import dataclass, field

from pidns.cgroups.cpu import format_cpu_list, parse_cpu_list
from pidns.cgroups.layout import CONTROLLERS, UNIFIED, Mount, System, read_text
from pidns.errors import LaunchFailed, UsageError

CFS_PERIOD_US = 100_000
MIN_QUOTA_US = 1_000  # the kernel's smallest cfs quota
MIN_MEMORY = 4 << 20  # below this the namespace's init and the command cannot even start
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
# The v2 controllers each limit needs enabled in the parent's subtree_control.
_V2_NEEDS = {
    "memory": "memory",
    "memory_swap": "memory",
    "cpus": "cpu",
    "cpuset": "cpuset",
    "pids_max": "pids",
}
_V1_NEEDS = _V2_NEEDS


@dataclass(frozen=True, slots=True)
class Limits:
    memory: int | None = None  # bytes
    # memory + swap, bytes (docker's and podman's --memory-swap); never without memory
    memory_swap: int | None = None
    cpus: float | None = None  # CPUs' worth of time per period (CFS quota / period)
    cpuset: tuple[int, ...] | None = None
    pids_max: int | None = None

    def any(self) -> bool:
        return any(getattr(self, name) is not None for name in _V2_NEEDS)

    def asked(self) -> list[str]:
        return [name for name in _V2_NEEDS if getattr(self, name) is not None]


def parse_size(text: str, option: str = "--memory") -> int:
    """ "64M", "1g", "512KiB", "1048576" -> bytes (binary units, as docker and podman read them)."""
    word = text.strip().lower().removesuffix("ib").removesuffix("b")
    digits = word.rstrip("kmgt")
    unit = word[len(digits) :]
    try:
        value = float(digits) if digits and unit in _UNITS else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise UsageError(
            f"{option} {text}: not a size (bytes, or a number with K, M, G or T: e.g. 64M)"
        )
    size = int(value * _UNITS[unit])
    if size < MIN_MEMORY:
        raise UsageError(
            f"{option} {text}: too small (at least 4M: the namespace's init and the command "
            "need that much to start)"
        )
    return size


def parse_cpus(text: str | float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"--cpus {text}: not a positive number of CPUs (e.g. 0.5, 2)")
    if value * CFS_PERIOD_US < MIN_QUOTA_US:
        raise UsageError(f"--cpus {text}: too small (at least 0.01: the kernel's 1 ms quota)")
    host = os.cpu_count() or 1
    if value > host:
        raise UsageError(f"--cpus {text}: more than this machine's {host} CPUs")
    return value


def parse_cpuset(text: str, available: tuple[int, ...] | None) -> tuple[int, ...]:
    try:
        cpus = parse_cpu_list(text)
    except ValueError:
        cpus = ()
    if not cpus:
        raise UsageError(f"--cpuset {text}: not a CPU list (e.g. 0, 0-3, 0,2)")
    if available is not None:
        missing = [c for c in cpus if c not in available]
        if missing:
            raise UsageError(
                f"--cpuset {text}: CPU {format_cpu_list(missing)} is not available "
                f"(this cgroup may use {format_cpu_list(available)})"
            )
    return cpus


def parse_pids_max(text: str | int) -> int:
    raw = str(text).strip()
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"--pids-max {text}: not a positive whole number of tasks")
    return int(raw)


def parse_memory_swap(text: str, memory: int | None) -> int:
    """--memory-swap: memory + swap, at least --memory (equal: no swap), only with it."""
    if memory is None:
        raise UsageError(
            f"--memory-swap {text}: needs --memory (the total of memory and swap is above it)"
        )
    total = parse_size(text, "--memory-swap")
    if total < memory:
        raise UsageError(
            f"--memory-swap {text}: less than --memory (it is memory + swap: "
            "equal to --memory for no swap)"
        )
    return total


def parse_limits(
    memory: str | None = None,
    cpus: str | float | None = None,
    cpuset: str | None = None,
    pids_max: str | int | None = None,
    system: System | None = None,
    memory_swap: str | None = None,
) -> Limits:
    """The limits as given on the command line; UsageError (exit 2) for any nonsense."""
    available = None
    if cpuset is not None:
        available = _available_cpus(system or System())
    mem = None if memory is None else parse_size(memory)
    return Limits(
        mem,
        None if memory_swap is None else parse_memory_swap(memory_swap, mem),
        None if cpus is None else parse_cpus(cpus),
        None if cpuset is None else parse_cpuset(cpuset, available),
        None if pids_max is None else parse_pids_max(pids_max),
    )


def _available_cpus(system: System) -> tuple[int, ...] | None:
    """The CPUs the launcher's own cpuset allows (sched affinity where it has no cpuset)."""
    from pidns.cgroups.cpu import cpuset

    try:
        own = cpuset(system.of_pid(os.getpid()))
    except OSError:
        own = None
    return own if own is not None else tuple(sorted(os.sched_getaffinity(0)))


# -- making it ----------------------------------------------------------------------------------


@dataclass
class Made:
    """One directory made: its path, its hierarchy, whether the run needs it (not just accounting)."""

    path: str
    v2: bool
    controllers: frozenset[str]


@dataclass
class Leaf:
    """The leaf the launcher moved into, under its own v2 cgroup (see the module's docstring)."""

    path: str
    enabled: frozenset[str] = frozenset()  # controllers enabled for the run in the leaf's parent


LEAF_SUFFIX = ".launcher"


@dataclass
class Cgroup:
    """The cgroup made for one run; `procs` are its cgroup.procs files, for the init to join."""

    limits: Limits
    dirs: list[Made] = field(default_factory=list)
    janitor_fd: int = -1  # write end of the janitor's pipe; -1 without a janitor
    leaf: Leaf | None = None

    def open_procs(self) -> tuple[int, ...]:
        """cgroup.procs of every directory, opened now (the rights checked are the opener's)."""
        fds: list[int] = []
        try:
            for made in self.dirs:
                fds.append(os.open(f"{made.path}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
        except OSError as err:
            for fd in fds:
                os.close(fd)
            raise _cannot(made.path, err) from None
        return tuple(fds)

    def paths(self) -> dict[str, str]:
        """controller -> directory ('unified' for the v2 one)."""
        out: dict[str, str] = {}
        for made in self.dirs:
            for c in made.controllers:
                out.setdefault(c, made.path)
            if made.v2:
                out.setdefault(UNIFIED, made.path)
        return out

    def remove(self, timeout: float = 5.0) -> None:
        """Remove every directory (waiting up to timeout for the last tasks to be freed); the
        janitor is told it is done, or, if something is still inside, left to finish it."""
        left = remove_dirs([m.path for m in self.dirs], timeout)
        out = self.leaf is not None and not left and leave_leaf(self.leaf)
        if self.janitor_fd >= 0:
            if not left:
                try:  # noqa: SIM105
                    # done (x: the janitor leaves at once; l: it removes the leaf once empty)
                    os.write(self.janitor_fd, b"l" if out else b"x")
                except OSError:
                    pass
            os.close(self.janitor_fd)
            self.janitor_fd = -1
        elif out and self.leaf is not None:
            remove_dirs([self.leaf.path], timeout)
        self.dirs = []
        self.leaf = None


def create(
    limits: Limits,
    *,
    system: System | None = None,
    own: bytes | None = None,
    name: str | None = None,
    janitor: bool = True,
) -> Cgroup:
    """Make the cgroup for a run with `limits`, next to the cgroups of `own` (the text of a
    /proc/PID/cgroup: this process's by default), and write the limits. LaunchFailed (125)
    with what to do when it cannot be made; nothing is left behind then."""
    system = system or System()
    if own is None:
        with open("/proc/self/cgroup", "rb") as f:
            own = f.read()
    name = name or f"pidns-{os.getpid()}-{os.urandom(3).hex()}"
    cg = Cgroup(limits)
    try:
        refused: LaunchFailed | None = None
        for target in _targets(system, own, limits):
            sweep(target.parent)
            refused = _make(cg, target, name) or refused
        if not cg.dirs:
            raise refused or LaunchFailed(
                "cannot create a cgroup: no cgroup hierarchy with the memory, cpu, cpuset or "
                "pids controller is mounted (see /proc/self/mountinfo)"
            )
        if janitor:
            cg.janitor_fd = _start_janitor([m.path for m in cg.dirs], cg.leaf)
    except BaseException:
        remove_dirs([m.path for m in cg.dirs], 0)
        if cg.leaf is not None and leave_leaf(cg.leaf):
            remove_dirs([cg.leaf.path], 1.0)
        raise
    return cg


@dataclass(frozen=True, slots=True)
class _Target:
    parent: str  # where the new directory goes
    v2: bool
    controllers: frozenset[str]  # what this hierarchy controls, of CONTROLLERS
    needed: bool  # a limit asked for lives here: failing to make it fails the run
    enable: frozenset[str] = frozenset()  # v2: controllers to enable in parent's subtree_control
    leaf: bool = False  # v2: parent is the launcher's own cgroup; the launcher moves to a leaf


def _targets(system: System, own: bytes, limits: Limits) -> list[_Target]:
    from pidns.cgroups.layout import parse_proc_cgroup

    paths = parse_proc_cgroup(own)
    asked_v1 = {_V1_NEEDS[n] for n in limits.asked()}
    out: list[_Target] = []
    v1_controllers: set[str] = set()
    for mount in system.mounts:
        if mount.v2:
            continue
        controllers = frozenset(c for c in mount.controllers if c in CONTROLLERS)
        if not controllers:
            continue
        where = _dir_of(mount, paths.get(next(iter(controllers))))
        if where is None:
            continue
        v1_controllers |= controllers
        out.append(_Target(where, False, controllers, bool(controllers & asked_v1)))
    for mount in system.mounts:
        if not mount.v2:
            continue
        where = _dir_of(mount, paths.get(UNIFIED))
        if where is None:
            continue
        top = mount.mountpoint.rstrip("/") or "/"
        # the launcher is in `where`: a cgroup with controllers can't be its child (v2 has no
        # processes in inner cgroups), so it goes beside it, unless `where` is the root, or
        # only `where` is the user's: then the launcher leaves it for a leaf under it
        parent = where if where == top else os.path.dirname(where)
        leaf = parent != where and not _may_write(parent) and _delegated(where)
        if leaf:
            parent = where
        available = _v2_available(parent, top)
        enable = frozenset(
            _V2_NEEDS[n] for n in limits.asked() if _V1_NEEDS[n] not in v1_controllers
        )
        missing = enable - available
        if missing:
            raise LaunchFailed(
                f"cannot create a cgroup: the {', '.join(sorted(missing))} controller is in "
                f"no v1 hierarchy and not available in {parent} (cgroup.controllers); "
                "run as root or delegate a cgroup v2 subtree with it"
            )
        served = frozenset(
            n for c in available for n in (("blkio",) if c == "io" else (c,)) if n in CONTROLLERS
        ) - frozenset(v1_controllers)
        if "cpu" in served:
            served |= {"cpuacct"}
        out.append(_Target(parent, True, served, bool(enable), enable, leaf))
        break
    return out


def _may_write(path: str) -> bool:
    return os.access(path, os.W_OK)


def _delegated(path: str) -> bool:
    """Whether the cgroup at path is delegated to this user as systemd delegates one: the
    directory, its cgroup.procs and cgroup.subtree_control theirs to write."""
    try:
        owner = os.stat(path).st_uid
    except OSError:
        return False
    return owner == os.geteuid() and all(
        _may_write(p) for p in (path, f"{path}/cgroup.procs", f"{path}/cgroup.subtree_control")
    )


def _dir_of(mount: Mount, path: str | None) -> str | None:
    if path is None:
        return None
    root = mount.root.rstrip("/")
    if root and path != root and not path.startswith(root + "/"):
        return None
    rest = path[len(root) :].rstrip("/")
    return (mount.mountpoint.rstrip("/") + rest) or "/"


def _v2_available(parent: str, top: str) -> frozenset[str]:
    text = read_text(f"{parent}/cgroup.controllers")
    return frozenset(text.split()) if text else frozenset()


def _make(cg: Cgroup, target: _Target, name: str) -> LaunchFailed | None:
    """Make one directory; the refusal, when it was only for accounting and so skipped."""
    path = f"{target.parent}/{name}"
    try:
        if target.leaf:
            cg.leaf = _enter_leaf(f"{path}{LEAF_SUFFIX}")
        if target.v2 and target.enable:
            enabled = _enable(target.parent, target.enable)
            if cg.leaf is not None:
                cg.leaf.enabled = enabled
        os.mkdir(path, 0o755)
    except OSError as err:
        if not target.needed and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return _cannot(path, err)  # accounting only: a hierarchy we may not write is skipped
        if target.leaf and err.errno == errno.EBUSY:
            raise LaunchFailed(
                f"cannot create a cgroup: {target.parent} holds other processes than pidns "
                "(cgroup v2 enables controllers only for a cgroup without processes): start "
                "pidns in a scope of its own (systemd-run --user --scope -p Delegate=yes pidns "
                "run …)"
            ) from None
        raise _cannot(path, err) from None
    cg.dirs.append(Made(path, target.v2, target.controllers))
    try:
        _write_limits(path, target, cg.limits)
    except OSError as err:
        raise LaunchFailed(f"cannot set the limits of cgroup {path}: {err.strerror}") from None
    return None


def _enable(parent: str, controllers: frozenset[str]) -> frozenset[str]:
    """Enable controllers for parent's children; those that were not enabled yet."""
    have = set((read_text(f"{parent}/cgroup.subtree_control") or "").split())
    wanted = sorted(controllers - have)
    if wanted:
        _write(f"{parent}/cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
    return frozenset(wanted)


def _enter_leaf(path: str) -> Leaf:
    """Make the leaf and move this process (all its threads) into it."""
    os.mkdir(path, 0o755)
    try:
        _write(f"{path}/cgroup.procs", "0")
    except OSError:
        with contextlib.suppress(OSError):
            os.rmdir(path)
        raise
    return Leaf(path)


def leave_leaf(leaf: Leaf) -> bool:
    """Undo _enter_leaf for this process: the controllers enabled for the run disabled again
    when no other cgroup beside the leaf may use them, and back into the leaf's parent (which a
    cgroup with controllers enabled for its children refuses). Whether it moved."""
    parent, own = os.path.split(leaf.path)
    try:
        others = [n for n in os.listdir(parent) if n != own and os.path.isdir(f"{parent}/{n}")]
        if leaf.enabled and not others:
            _write(
                f"{parent}/cgroup.subtree_control",
                " ".join(f"-{c}" for c in sorted(leaf.enabled)),
            )
        _write(f"{parent}/cgroup.procs", "0")
    except OSError:
        return False
    return True


def _write_limits(path: str, target: _Target, limits: Limits) -> None:
    v2, controllers = target.v2, target.controllers
    if "cpuset" in controllers:
        # v1 starts a cpuset empty (no task may join until cpus and mems are set): the
        # parent's, or the CPUs asked for; v2 inherits the parent's unless told
        parent = os.path.dirname(path)
        if not v2:
            _write(f"{path}/cpuset.mems", _effective(parent, "mems"))
            cpus = limits.cpuset
            _write(
                f"{path}/cpuset.cpus",
                format_cpu_list(cpus) if cpus else _effective(parent, "cpus"),
            )
        elif limits.cpuset is not None:
            _write(f"{path}/cpuset.cpus", format_cpu_list(limits.cpuset))
    if limits.memory is not None and "memory" in controllers:
        _write(f"{path}/{'memory.max' if v2 else 'memory.limit_in_bytes'}", str(limits.memory))
        if limits.memory_swap is not None:
            _write_swap(path, v2, limits.memory, limits.memory_swap)
    if limits.cpus is not None and "cpu" in controllers:
        quota = round(limits.cpus * CFS_PERIOD_US)
        if v2:
            _write(f"{path}/cpu.max", f"{quota} {CFS_PERIOD_US}")
        else:
            _write(f"{path}/cpu.cfs_period_us", str(CFS_PERIOD_US))
            _write(f"{path}/cpu.cfs_quota_us", str(quota))
    if limits.pids_max is not None and "pids" in controllers:
        _write(f"{path}/pids.max", str(limits.pids_max))


def _write_swap(path: str, v2: bool, memory: int, total: int) -> None:
    """v1's memsw limit is memory + swap (written after memory: the kernel keeps memsw at
    least memory); v2's memory.swap.max is the swap alone."""
    name = "memory.swap.max" if v2 else "memory.memsw.limit_in_bytes"
    try:
        _write(f"{path}/{name}", str(total - memory if v2 else total))
    except OSError:
        if not os.path.exists(f"{path}/{name}"):
            raise LaunchFailed(
                f"cannot limit swap: {path} has no {name} (the kernel does not account swap "
                "for cgroups: swapaccount=0, or built without it)"
            ) from None
        raise


def _effective(d: str, what: str) -> str:
    """A v1 cpuset's effective cpus/mems, from the nearest directory that has them set."""
    while True:
        for name in (f"cpuset.effective_{what}", f"cpuset.{what}"):
            text = (read_text(f"{d}/{name}") or "").strip()
            if text:
                return text
        up = os.path.dirname(d)
        if up == d:
            return "0"
        d = up


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_TRUNC | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _cannot(path: str, err: OSError) -> LaunchFailed:
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return LaunchFailed(
            f"cannot create a cgroup: {path}: {err.strerror}; run as root, or delegate a "
            "cgroup v2 subtree to your user (systemd-run --user --scope -p Delegate=yes pidns run …)"
        )
    return LaunchFailed(f"cannot create a cgroup: {path}: {err.strerror}")


# -- removing it --------------------------------------------------------------------------------


def remove_dirs(paths: list[str], timeout: float) -> list[str]:
    """rmdir each path (innermost first), retrying while tasks are still being freed; the paths
    still there after timeout."""
    left = list(reversed(paths))
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        still = []
        for path in left:
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError as err:
                if err.errno != errno.EBUSY:
                    return left  # not ours to fix (gone read-only, rights lost)
                still.append(path)
        left = still
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


SWEEP_AGE = 60.0  # seconds: older than any launcher takes from mkdir to its init joining


def sweep(parent: str, now: float | None = None) -> list[str]:
    """Remove the directories `pidns-PID-HEX` in parent whose launcher PID is gone, older than
    SWEEP_AGE (a launcher in another PID namespace has numbers of its own; none takes that long
    to fill its cgroup); the kernel refuses any still holding a task (EBUSY), and those not ours
    (EACCES): both are left. The paths removed."""
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    removed = []
    now = time.time() if now is None else now
    for entry in names:
        parts = entry.split("-")
        if len(parts) != 3 or parts[0] != "pidns" or not parts[1].isdigit():
            continue
        path = f"{parent}/{entry}"
        try:
            os.kill(int(parts[1]), 0)
            continue  # its launcher (or a task with its pid) lives: not ours to judge
        except ProcessLookupError:
            pass
        except OSError:
            continue
        try:
            if now - os.stat(path).st_mtime < SWEEP_AGE:
                continue
            os.rmdir(path)
        except OSError:
            continue
        removed.append(path)
    return removed


def _start_janitor(paths: list[str], leaf: Leaf | None = None) -> int:
    """Fork a detached process that removes paths once the launcher and everything that
    inherited the pipe is gone (EOF) and the cgroup is empty; b"x" on the pipe: nothing to do.
    With a leaf (where the janitor starts too), after the paths, or at once on b"l" (the
    launcher left it), it leaves the leaf as the launcher would and removes it once empty.
    Returns the pipe's write end (close-on-exec: a command exec'd inside does not hold it)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forked janitor never returns
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            os.closerange(0, read_end)
            os.closerange(read_end + 1, 1 << 16)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            while True:
                try:
                    word = os.read(read_end, 1)
                    break
                except InterruptedError:
                    continue
            if word not in (b"x", b"l"):
                remove_dirs(paths, 30 * 24 * 3600.0)  # for as long as the namespace lives
            if word != b"x" and leaf is not None and leave_leaf(leaf):
                remove_dirs([leaf.path], 30 * 24 * 3600.0)
        finally:
            os._exit(0)
    os.close(read_end)
    os.waitpid(pid, 0)
    return write_end
