"""`pidns exec --backend fuse|kernel` and `pidns run --view`: real clients through both backends."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.fuse]

PIDNS = [sys.executable, "-m", "pidns.cli.main"]
PSUTIL = (
    "import psutil, os\n"
    "me = os.getpid()\n"
    "rows = sorted((p.pid, p.ppid(), p.name(), p.status()) for p in psutil.process_iter() if p.pid != me)\n"
    "print(rows)\n"
)


@contextmanager
def workload(tmp_path: Path) -> Iterator[str]:
    """A named two-level namespace with a few processes: sleepers, a session, a zombie."""
    name = f"clients-{os.getpid()}"
    script = "setsid sleep 300 & sh -c 'sleep 0 & exec sleep 300' & sleep 300 & wait"
    status = tmp_path / "status"
    run = subprocess.Popen(
        [
            *PIDNS,
            "run",
            "--nest",
            "2",
            "--name",
            name,
            "--status-json",
            str(status),
            "--",
            "sh",
            "-c",
            script,
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not status.exists() or not status.read_text()):
            time.sleep(0.05)
        time.sleep(0.3)  # let the shell start its children
        yield name
    finally:
        run.terminate()
        run.wait(30)


def inside(name: str, backend: str, *argv: str) -> str:
    out = subprocess.run(
        [*PIDNS, "exec", "--ns", name, "--backend", backend, "--", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def without_client(text: str, client: str) -> list[str]:
    """Lines minus the client's own row (its pid differs between the two runs)."""
    return [line for line in text.splitlines() if client not in line]


def test_ps_pstree_top_psutil_agree_through_both_backends(tmp_path: Path) -> None:
    with workload(tmp_path) as name:
        ps = ["ps", "-eo", "pid,ppid,pgid,sid,stat,comm,args"]
        assert without_client(inside(name, "fuse", *ps), "ps -eo") == without_client(
            inside(name, "kernel", *ps), "ps -eo"
        )
        tree = {
            b: re.sub(r"-pstree\(\d+\)", "", inside(name, b, "pstree", "-p"))
            for b in ("fuse", "kernel")
        }
        assert tree["fuse"] == tree["kernel"]
        assert "sleep(" in tree["fuse"]
        top = {
            b: sorted(
                (line.split()[0], line.split()[-1])
                for line in inside(name, b, "top", "-b", "-n1").splitlines()
                if line.strip()[:1].isdigit() and not line.rstrip().endswith("top")
            )
            for b in ("fuse", "kernel")
        }
        assert top["fuse"] == top["kernel"] and top["fuse"]
        py = {b: inside(name, b, sys.executable, "-c", PSUTIL) for b in ("fuse", "kernel")}
        assert py["fuse"] == py["kernel"]
        assert "'sleep'" in py["fuse"] and "'zombie'" in py["fuse"]


# htop has no batch mode: its first screen, from a tmux of the namespace's own
_HTOP = (
    "tmux -L pidns-htop new-session -d -x 200 -y 50 'htop -t'; sleep 2; "
    "tmux -L pidns-htop capture-pane -p; tmux -L pidns-htop kill-server"
)


def _htop_rows(screen: str) -> set[tuple[str, str]]:
    """(PID, command) of every process htop lists but its own and its tmux's."""
    rows = set()
    for line in screen.splitlines():
        words = line.split()
        if words and words[0].isdigit() and len(words) > 11:
            command = " ".join(words[11:]).lstrip("`|-\u2500\u2502\u251c\u2514 ")
            if not re.match(r"(htop|tmux|sh -c tmux|sleep 2$)", command):  # the probe's own
                rows.add((words[0], command))
    return rows


def test_htop_lists_the_same_tasks_through_both_backends(tmp_path: Path) -> None:
    """htop's tree of processes (PID, command line), the probe's own left out, is the same."""
    if shutil.which("htop") is None or shutil.which("tmux") is None:
        pytest.skip("needs htop and tmux (scripts/bootstrap.sh installs them)")
    with workload(tmp_path) as name:
        rows = {b: _htop_rows(inside(name, b, "sh", "-c", _HTOP)) for b in ("fuse", "kernel")}
        assert rows["fuse"] == rows["kernel"]
        assert any(command.startswith("sleep") for _pid, command in rows["fuse"]), rows


def test_run_view_lives_as_long_as_the_command(tmp_path: Path) -> None:
    view = tmp_path / "view"
    status = tmp_path / "status"
    run = subprocess.Popen(
        [
            *PIDNS,
            "run",
            "--view",
            str(view),
            "--view-backend",
            "fuse",
            "--status-json",
            str(status),
            "--",
            "sh",
            "-c",
            "sleep 2; exit 4",
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not status.exists() or not status.read_text()):
            time.sleep(0.05)
        started = json.loads(status.read_text().splitlines()[0])
        pids = sorted(int(n) for n in os.listdir(view) if n.isdigit())
        assert pids == [1, 2, 3]  # init, shell, sleep: numbered as the namespace does
        status_2 = (view / "2" / "status").read_text()
        assert "\nNSpid:\t2\n" in status_2 and "\nPPid:\t1\n" in status_2
        assert started["host_pid"] != 2
        assert run.wait(30) == 4
    finally:
        run.kill()
        run.wait()
    assert not view.exists()  # made for the view, removed with it


def test_run_view_on_a_file_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("")
    out = subprocess.run(
        [*PIDNS, "run", "--view", str(target), "--", "true"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and str(target) in out.stderr
    assert str(target) not in Path("/proc/self/mountinfo").read_text()
