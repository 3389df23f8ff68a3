"""Churn soak: about 1,000 task creations and exits per second across three nested namespaces
while readers walk every view, from the host and from inside each namespace.

Length: PIDNS_SOAK_SECONDS (default 60; `make soak` runs 300). Pass: readers only ever see ENOENT
or ESRCH (vanished tasks), never another errno nor a wrong task's data under a reused pid; the
daemon's fds and RSS are flat at the end; no task of the soak is left behind.

The same soak again with the daemon SIGKILLed every KILL_EVERY s (the holder wakes a successor,
which takes over every view): every criterion above holds unchanged, for the daemon that runs at
the end over the part of the run it served (LAST_SERVES s, after the last kill); the holder's fds
and RSS stay flat across the kills;
each kill is followed by exactly one successor (the generation grows by the number of kills); the
time from each kill to the first request answered, and to the new generation seen by the
daemon's status, is in the figures.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pidns.fuse import passthrough
from pidns.view.api import ViewHandle, open_view
from tests.soak.support import (
    daemon_figures,
    daemon_pid,
    end_namespace,
    holder_figures,
    holder_pid,
    pidns,
    private_daemon,
    wait_for,
)

pytestmark = [pytest.mark.root, pytest.mark.fuse]

SECONDS = float(os.environ.get("PIDNS_SOAK_SECONDS", "60"))
LEVELS = 3
BATCH = int(os.environ.get("PIDNS_SOAK_BATCH", "16"))  # subshells per round of each churn loop
HERE = Path(__file__).parent
# What a reader may be told about a task that exited under it.
ALLOWED = ("No such file or directory", "No such process")
# Flat at the end: the daemon's fds are its views' and the directories of tasks alive and cached,
# so back to the baseline give or take the handful of tasks alive at either moment; its RSS grows
# by less than this over the second half of the run (the heap has settled by then).
FD_SLACK = 16
POOL_KIND = "/memfd"  # passthrough's backing files (memfds), as _pins names their kind
RSS_SLACK_MB = 3.0
# What the kernel answers for /N/net of a task that has exited (no network namespace left to
# list): EINVAL, the view's answer too (tests/differential compares zombies' net/ listings).
EXITED_NET = re.compile("/net['\u2019]: Invalid argument$")  # find quotes as its locale says
# procps's ps abandons its whole listing with this when it can open or read no /proc listing,
# when it reads no task at all (not even itself), or on ENOMEM: never for tasks that vanish.
PS_GAVE_UP = "fatal library error"
# Known and unexplained, each about once per 300,000 exits (one in two 5-minute soaks): a reaped
# task's directory stays pinned although its flush found and invalidated its names; ps gives up
# once through a view where it did not on the kernel's procfs. Bounded here, counted in the
# figures, named in the README: more than this is a regression.
RARE = 1
# The kill variant: a SIGKILL of the daemon every KILL_EVERY s over SECONDS, the last one at least
# KILL_EVERY s before SECONDS; the daemon that runs at the end then serves LAST_SERVES s in all, so
# that the second half of its run, where its RSS must be flat, comes after its first full walk of
# the views (which grows its heap, as the first daemon's grew before the churn). Fds and RSS are
# sampled every KILL_SAMPLE s (each successor serves only KILL_EVERY s). A successor must answer
# within TAKEOVER_LIMIT s of a kill (the README's target is 1 s; this bound only catches a hang).
KILL_EVERY = 10.0
LAST_SERVES = 30.0
KILL_SAMPLE = 1.0
TAKEOVER_LIMIT = 30.0
# The holder keeps what it kept (fds equal) and its RSS grows less than this over the run.
HOLDER_RSS_SLACK_MB = 1.0
# A mount namespace made anywhere on the machine while the views are mounted (an `unshare
# --mount` of another test, a container) holds copies of them that the soak's unmount does not
# reach (private propagation): their superblocks, and so their connections, live until the last
# such namespace ends, and the daemon rightly serves them until then. Its leave is timed from
# there; this long at most is waited for those copies to go.
COPIES_LIMIT = 300.0


def _host_forks() -> int:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("processes "):
            return int(line.split()[1])
    return 0


def _copies(base: Path) -> dict[str, str]:
    """Mount namespaces where a mount under base is still mounted: each with a process of it."""
    prefix = f" {base}/"
    found: dict[str, str] = {}
    seen: set[str] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            ns = os.readlink(entry / "ns" / "mnt")
            if ns in seen:
                continue
            seen.add(ns)
            if prefix in (entry / "mountinfo").read_text():
                found[ns] = f"{entry.name}: {(entry / 'cmdline').read_bytes()[:120]!r}"
    return found


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _inits(unshare_pid: int) -> list[int]:
    """Host pids of the churn inits, outermost first: each is the child of an unshare."""
    inits: list[int] = []
    unshare = unshare_pid
    while len(inits) < LEVELS:
        kids = _children(unshare)
        if not kids:
            return []
        inits.append(kids[0])
        nested = [k for k in _children(kids[0]) if _comm(k) == "unshare"]
        if len(inits) < LEVELS:
            if not nested:
                return []
            unshare = nested[0]
    return inits


@contextlib.contextmanager
def churn(work: Path) -> Iterator[list[int]]:
    proc = subprocess.Popen(
        [
            *("unshare", "--pid", "--fork", "--mount-proc"),
            *("/usr/bin/python3", "-S", "-I", str(HERE / "churn_init.py")),
            *(str(LEVELS), str(BATCH), str(work)),
        ],
        start_new_session=True,
    )
    inits: list[int] = []
    try:
        wait_for(
            lambda: all((work / f"ready.{d}").exists() for d in range(1, LEVELS + 1)),
            20,
            "the churn namespaces did not start",
        )
        inits = _inits(proc.pid)
        assert len(inits) == LEVELS, "could not find the churn namespaces' inits"
        yield inits
    finally:
        end_namespace(proc, inits[0] if inits else (_children(proc.pid) or [0])[0])


def _inside(init: int, view: Path | None, work: Path, errors: Path) -> subprocess.Popen[bytes]:
    """`ps -ef` and `find /proc` in a loop inside the namespace, the view at its /proc; with no
    view, the namespace's own kernel procfs (the control: what the same clients meet there)."""
    loop = (
        'while [ ! -e "$1/stop" ]; do ps -ef >/dev/null 2>>"$2"; '
        'find /proc -maxdepth 2 >/dev/null 2>>"$2"; done; exit 0'
    )
    if view is None:
        enter = ["nsenter", f"--pid=/proc/{init}/ns/pid", f"--mount=/proc/{init}/ns/mnt", "--"]
        script = loop
    else:
        enter = [
            *("nsenter", f"--pid=/proc/{init}/ns/pid", "--"),
            *("unshare", "--mount", "--propagation", "private"),
        ]
        script = 'mount --bind "$0" /proc || exit 3; ' + loop
    return subprocess.Popen([*enter, "sh", "-c", script, str(view), str(work), str(errors)])


def _walk_from_host(views: list[Path], stop: Path, errors: list[str]) -> None:
    while not stop.exists():
        for view in views:
            done = subprocess.run(
                ["find", str(view), "-maxdepth", "3"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                check=False,
            )
            errors.extend(done.stderr.splitlines())


def _pins(daemon: int) -> dict[str, int]:
    """The daemon's fds by kind; `reaped` counts pinned task directories whose task is gone."""
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{daemon}/fd"):
        try:
            target = os.readlink(f"/proc/{daemon}/fd/{fd}")
        except OSError:
            continue
        parts = target.split("/")
        if target.startswith("/proc/") and target.endswith(" (deleted)"):
            kind = "reaped"
        elif len(parts) >= 3 and parts[1] == "proc" and parts[2].isdigit():
            kind = "task" if os.path.exists(f"/proc/{parts[-1]}") else "reaped"
        else:
            kind = target.split(":")[0] if ":" in target else target
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def _served() -> list[dict[str, Any]]:
    from pidns.view import control, state

    try:
        reply = control.request(str(state.socket_path()), {"op": "list"})
    except OSError as err:  # the daemon no longer listens (leaving, or stuck leaving)
        return [{"view": "-", "error": str(err)}]
    keys = ("view", "inodes", "tasks", "tasks_gone", "gone_kinds")
    return [{k: v[k] for k in keys} for v in reply["views"]]


def _unexpected(lines: list[str]) -> list[str]:
    return [line for line in lines if line.strip() and not any(a in line for a in ALLOWED)]


def _lines(where: Path, kind: str) -> list[str]:
    return [
        line for i in range(LEVELS) for line in (where / f"{kind}{i}.err").read_text().splitlines()
    ]


def _walk_once(views: list[Path]) -> None:
    for view in views:
        subprocess.run(["find", str(view)], capture_output=True, check=False)


def _ping() -> dict[str, Any] | None:
    """The daemon's answer to a ping (pid, generation); None while none answers."""
    from pidns.view import control, state

    try:
        reply = control.request(str(state.socket_path()), {"op": "ping"}, timeout=1)
    except (OSError, ValueError):
        return None
    return reply if reply.get("ok") else None


def _rank(values: list[float], q: float) -> float:
    """The nearest-rank q-quantile (p99 of fewer than 100 values: the largest)."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(q * len(ranked)) - 1)]


def _kill(view: Path, before: dict[str, Any]) -> dict[str, Any]:
    """SIGKILL the daemon that answered `before`; wait for its successor. Seconds from the kill
    to the first request of a view answered (an OPEN and a READ: always the daemon's), and to
    the successor's generation in the daemon's status."""
    answered: list[float] = []
    failed: list[str] = []

    def read() -> None:
        try:
            (view / "1" / "status").read_bytes()
        except OSError as err:
            failed.append(repr(err))
        answered.append(time.monotonic() - killed)

    os.kill(before["pid"], signal.SIGKILL)
    killed = time.monotonic()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    after: dict[str, Any] = {}

    def successor() -> bool:
        reply = _ping()
        if reply is not None and reply["pid"] != before["pid"]:
            after.update(reply, status_s=time.monotonic() - killed)
        return bool(after) and bool(answered)

    wait_for(successor, TAKEOVER_LIMIT, f"no successor answered after killing {before}")
    assert failed == [], f"a read through the view failed across a takeover: {failed}"
    return {
        "killed": before["pid"],
        "pid": after["pid"],
        "generation": after["generation"],
        "answered_s": round(answered[0], 4),
        "status_s": round(after["status_s"], 4),
    }


def _served_from(daemon: int, at: float) -> dict[str, Any]:
    """A daemon's figures as it starts to serve, from `at` s into the churn."""
    fds, rss = daemon_figures(daemon)
    return {"pid": daemon, "from_s": round(at, 1), "fds": fds, "rss_mb": round(rss, 1)}


def test_churn_soak(tmp_path: Path) -> None:
    _soak(tmp_path, kills=False)


def test_churn_soak_with_daemon_kills(tmp_path: Path) -> None:
    _soak(tmp_path, kills=True)


def _state(pid: int) -> str:
    """A process's state letter; "" once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rfind(")") + 2 :].split()[0]


def _soak(tmp_path: Path, kills: bool) -> None:
    if kills and SECONDS < 2 * KILL_EVERY:
        pytest.skip(f"a soak of {SECONDS:.0f} s has no room for a kill every {KILL_EVERY:.0f} s")
    work = tmp_path / "work"
    work.mkdir()
    figures: dict[str, Any] = {}
    with private_daemon(tmp_path), churn(work) as inits:
        handles: list[ViewHandle] = []
        views: list[Path] = []
        try:
            # one view per level, and a second view of the outermost (one instance, two mounts)
            for i, init in enumerate([*inits, inits[0]]):
                mp = tmp_path / f"view{i}"
                mp.mkdir()
                handles.append(open_view(f"@{init}", str(mp), backend="fuse"))
                views.append(mp)
            daemon = daemon_pid()
            _walk_once(views)
            figures["fds_start"], figures["rss_mb_start"] = daemon_figures(daemon)
            figures["fds_start_by_kind"] = _pins(daemon)
            if kills:
                pinged = _ping()
                assert pinged is not None and pinged["pid"] == daemon
                generation_start = int(pinged["generation"])
                holder = holder_pid()
                holder_samples = [(0, *holder_figures(holder))]
                # every daemon of the run: where it started to serve and its samples since
                served = [_served_from(daemon, 0) | {"generation": generation_start}]
                served[0]["samples"] = []
                takeovers: list[dict[str, Any]] = []

            readers = [
                subprocess.Popen(
                    [sys.executable, str(HERE / "reader.py"), str(v), str(init), str(i), str(work)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for i, (v, init) in enumerate(zip(views, [*inits, inits[0]], strict=True))
            ]
            insiders = [
                _inside(init, view, work, tmp_path / f"inside{i}.err")
                for i, (init, view) in enumerate(zip(inits, views[:LEVELS], strict=True))
            ]
            controls = [
                _inside(init, None, work, tmp_path / f"control{i}.err")
                for i, init in enumerate(inits)
            ]
            host_errors: list[str] = []
            walker = threading.Thread(
                target=_walk_from_host, args=(views, work / "stop", host_errors), daemon=True
            )
            walker.start()

            forks_before = _host_forks()
            (work / "go").touch()
            started = time.monotonic()
            samples = []
            if not kills:
                while (elapsed := time.monotonic() - started) < SECONDS:
                    time.sleep(min(5.0, SECONDS - elapsed))
                    samples.append((round(time.monotonic() - started), *daemon_figures(daemon)))
            else:
                next_kill = KILL_EVERY
                last_kill = KILL_EVERY * ((SECONDS - KILL_EVERY) // KILL_EVERY)
                end = last_kill + LAST_SERVES
                while (elapsed := time.monotonic() - started) < end:
                    if next_kill <= last_kill and elapsed >= next_kill:
                        before = _ping()
                        assert before is not None and before["pid"] == daemon, (before, daemon)
                        takeover = _kill(views[0], before)
                        takeover["at_s"] = round(elapsed, 1)
                        takeovers.append(takeover)
                        daemon = takeover["pid"]
                        at = time.monotonic() - started
                        served.append(_served_from(daemon, at))
                        served[-1] |= {"generation": takeover["generation"], "samples": []}
                        holder_samples.append((round(at), *holder_figures(holder)))
                        next_kill += KILL_EVERY
                        continue
                    time.sleep(min(KILL_SAMPLE, end - elapsed))
                    sample = (round(time.monotonic() - started, 1), *daemon_figures(daemon))
                    served[-1]["samples"].append(sample)
                # the criteria below are those of the daemon that runs at the end, over the part
                # of the run it served
                samples = served[-1]["samples"]
                holder_samples.append((round(time.monotonic() - started), *holder_figures(holder)))
            (work / "stop").touch()
            churned = time.monotonic() - started
            forks_after = _host_forks()
            wait_for(
                lambda: all((work / f"count.{d}").exists() for d in range(1, LEVELS + 1)),
                30,
                "a churn loop did not stop",
            )
            created = sum(int((work / f"count.{d}").read_text()) for d in range(1, LEVELS + 1))
            figures["churn_per_s"] = round(created / churned)
            figures["host_forks_per_s"] = round((forks_after - forks_before) / churned)

            reports = []
            for reader in readers:
                out, _ = reader.communicate(timeout=120)
                reports.append(json.loads(out))
            for insider in [*insiders, *controls]:
                insider.wait(120)
            walker.join(120)

            _walk_once(views)  # what a last reader leaves cached
            time.sleep(1)
            figures["fds_end"], figures["rss_mb_end"] = daemon_figures(daemon)
            figures["fds_end_by_kind"] = _pins(daemon)
            figures["views_end"] = _served()
            _walk_once(views)  # what one more walk adds (the heap a first full walk grows)
            time.sleep(1)
            figures["rss_mb_after_another_walk"] = daemon_figures(daemon)[1]
            warm = samples[min(1, len(samples) - 1)]  # after the first seconds of churn
            figures["fds_warm"], figures["rss_mb_warm"] = warm[1], warm[2]
            figures["samples"] = samples
            figures["reader_ops"] = sum(r["ops"] for r in reports)
            figures["identity_checks"] = sum(r["checked"] for r in reports)
            figures["allowed_errors"] = {
                k: sum(r["allowed"].get(k, 0) for r in reports) for k in ("ENOENT", "ESRCH")
            }
            inside = _unexpected(_lines(tmp_path, "inside"))
            control = _unexpected(_lines(tmp_path, "control"))
            figures["ps_gave_up"] = {
                "view": sum(PS_GAVE_UP in line for line in inside),
                "kernel": sum(PS_GAVE_UP in line for line in control),
            }
            figures["exited_net"] = sum(bool(EXITED_NET.search(line)) for line in host_errors)
            half = samples[len(samples) // 2]
            figures["rss_mb_half"] = half[2]
            if kills:
                status = json.loads(pidns("daemon", "status", "--json").stdout)
                figures["kills"] = len(takeovers)
                figures["generation"] = {"start": generation_start, "end": status["generation"]}
                figures["daemon_end"] = status["pid"]
                answered = [t["answered_s"] for t in takeovers]
                by_status = [t["status_s"] for t in takeovers]
                figures["takeover_s"] = {
                    "answered_p50": round(statistics.median(answered), 3),
                    "answered_p99": round(_rank(answered, 0.99), 3),
                    "status_p50": round(statistics.median(by_status), 3),
                    "status_p99": round(_rank(by_status, 0.99), 3),
                }
                figures["takeovers"] = takeovers
                figures["served"] = served
                figures["holder_samples"] = holder_samples
            print(f"\nsoak figures: {json.dumps(figures)}")
            report_to = os.environ.get("PIDNS_SOAK_REPORT")
            if report_to:
                Path(report_to).write_text(json.dumps(figures, indent=2) + "\n")

            assert all(i.returncode == 0 for i in [*insiders, *controls]), "an inside reader failed"
            for report in reports:
                assert report["bad"] == [], report["bad"]
                assert report["mismatches"] == [], report["mismatches"]
            # ps may give up through the view as often as on the kernel's procfs under the same
            # churn (counted there too: should it ever, the cause is outside the view), and RARE
            # times more
            assert [line for line in inside if PS_GAVE_UP not in line] == []
            gave_up = figures["ps_gave_up"]
            assert gave_up["view"] <= gave_up["kernel"] + RARE, inside[:3]
            unexpected_host = [
                line for line in _unexpected(host_errors) if not EXITED_NET.search(line)
            ]
            assert unexpected_host == []
            assert figures["identity_checks"] > 0 and figures["reader_ops"] > 0
            assert created > 0

            # (almost) nothing kept of a reaped task; fds and RSS flat
            assert sum(v.get("tasks_gone", 0) for v in figures["views_end"]) <= RARE
            assert figures["fds_end_by_kind"].get("reaped", 0) <= RARE
            # Passthrough's memfds (one per file recently opened) are a bounded pool, not kept
            # for reaped tasks (their inodes are forgotten): counted apart, against that bound.
            pool = {k: kinds.get(POOL_KIND, 0) for k, kinds in figures.items()
                    if k in ("fds_start_by_kind", "fds_end_by_kind")}  # fmt: skip
            assert pool["fds_end_by_kind"] <= passthrough.IDLE_KEPT * len(views)
            assert (
                figures["fds_end"] - pool["fds_end_by_kind"]
                <= figures["fds_start"] - pool["fds_start_by_kind"] + FD_SLACK
            )
            assert figures["rss_mb_end"] <= half[2] + RSS_SLACK_MB, samples

            if kills:
                # every kill had a successor, one only, and it still serves; the holder is the
                # same, holds what it held, and its RSS is flat
                expected = round((SECONDS - KILL_EVERY) // KILL_EVERY)
                assert len(takeovers) == expected > 0, takeovers
                generations = [generation_start] + [t["generation"] for t in takeovers]
                assert generations == list(range(generation_start, generation_start + expected + 1))
                assert figures["generation"]["end"] == generation_start + expected, status
                assert status["pid"] == daemon
                assert holder_pid() == holder
                holder_fds = {fds for _t, fds, _rss in holder_samples}
                assert len(holder_fds) == 1, holder_samples
                assert holder_samples[-1][2] <= holder_samples[0][2] + HOLDER_RSS_SLACK_MB, (
                    holder_samples
                )
        finally:
            (work / "stop").touch()
            for handle in handles:
                try:
                    handle.close()
                except Exception:  # busy a moment longer (a reader's mount namespace): detach
                    subprocess.run(["umount", "-l", handle.mountpoint], check=False)

        # the daemon leaves once it serves no view: once no mount namespace has one mounted
        copies = _copies(tmp_path)
        unmounted = time.monotonic()
        wait_for(
            lambda: not _copies(tmp_path),
            COPIES_LIMIT,
            f"the views stay mounted in mount namespaces of others: {_copies(tmp_path)}",
        )
        if copies:
            print(
                f"\nthe views' last copies (namespaces made while they were mounted) went "
                f"{time.monotonic() - unmounted:.1f} s after the unmount: {copies}"
            )
        wait_for(
            lambda: not Path(f"/proc/{daemon}").exists(),
            30,
            f"the daemon stayed after its views were unmounted: {_served()}",
        )
        if kills:  # and no killed daemon lingers
            killed = [t["killed"] for t in takeovers]
            wait_for(
                lambda: all(_state(pid) in ("Z", "") for pid in killed),
                30,
                f"a killed daemon stays: {[(p, _state(p)) for p in killed]}",
            )

    # nothing of the soak is left: every task of the namespaces died with their inits, and
    # nothing of ours is a zombie
    def leftovers() -> list[str]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes()
                stat = (entry / "stat").read_text()
                fields = stat[stat.rfind(")") + 2 :].split()
                if str(tmp_path).encode() in cmdline or (
                    fields[0] == "Z" and int(fields[1]) == os.getpid()
                ):
                    found.append(f"{entry.name}: {cmdline!r} {fields[0]}")
        return found

    wait_for(lambda: not leftovers(), 10, f"left behind: {leftovers()}")
