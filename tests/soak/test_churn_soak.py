"""Churn soak: about 1,000 task creations and exits per second across three nested namespaces
while readers walk every view, from the host and from inside each namespace.

Length: PIDNS_SOAK_SECONDS (default 60; `make soak` runs 300). Pass: readers only ever see ENOENT
or ESRCH (vanished tasks), never another errno nor a wrong task's data under a reused pid; the
daemon's fds and RSS are flat at the end; no task of the soak is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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
# procps's ps abandons its whole listing with this when tasks vanish at the wrong moment.
PS_GAVE_UP = "fatal library error"
# Known and unexplained, each about once per 300,000 exits (one in two 5-minute soaks): a reaped
# task's directory stays pinned although its flush found and invalidated its names; ps gives up
# once through a view where it did not on the kernel's procfs. Bounded here, counted in the
# figures, named in the README: more than this is a regression.
RARE = 1


def _host_forks() -> int:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("processes "):
            return int(line.split()[1])
    return 0


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


def test_churn_soak(tmp_path: Path) -> None:
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
            while (elapsed := time.monotonic() - started) < SECONDS:
                time.sleep(min(5.0, SECONDS - elapsed))
                samples.append((round(time.monotonic() - started), *daemon_figures(daemon)))
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
            print(f"\nsoak figures: {json.dumps(figures)}")
            report_to = os.environ.get("PIDNS_SOAK_REPORT")
            if report_to:
                Path(report_to).write_text(json.dumps(figures, indent=2) + "\n")

            assert all(i.returncode == 0 for i in [*insiders, *controls]), "an inside reader failed"
            for report in reports:
                assert report["bad"] == [], report["bad"]
                assert report["mismatches"] == [], report["mismatches"]
            # ps may give up through the view as often as on the kernel's procfs under the same
            # churn (how procps meets vanishing tasks), and RARE times more
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
        finally:
            (work / "stop").touch()
            for handle in handles:
                try:
                    handle.close()
                except Exception:  # busy a moment longer (a reader's mount namespace): detach
                    subprocess.run(["umount", "-l", handle.mountpoint], check=False)

        # the daemon leaves once it serves no view
        wait_for(
            lambda: not Path(f"/proc/{daemon}").exists(),
            30,
            f"the daemon stayed after its views were unmounted: {_served()}",
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
