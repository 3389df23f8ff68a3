"""Scenario trees and side-by-side walks of two views of the same namespace."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BUILDER = Path(__file__).with_name("builder.py")

STATUS_KEYS = (
    "Name",
    "Tgid",
    "Pid",
    "PPid",
    "TracerPid",
    "Uid",
    "Gid",
    "NStgid",
    "NSpid",
    "NSpgid",
    "NSsid",
    "Threads",
)
STAT_FIELDS = (0, 1, 3, 4, 5, 6, 7, 19, 21)  # 0-based: pid comm ppid pgrp session tty tpgid
# threads starttime


@contextlib.contextmanager
def scenario(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, str(BUILDER), json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        info: dict[str, Any] = json.loads(line)
        info["members"] = members(info["init"], info["ns"])
        yield info
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            with contextlib.suppress(OSError):
                todo.extend(
                    int(c) for c in Path(f"/proc/{p}/task/{tid}/children").read_text().split()
                )
    return out


def members(init: int, inodes: list[int]) -> dict[int, int]:
    """ns inode -> host pid of one live member (for mounting the view of that level)."""
    found: dict[int, int] = {}
    for pid in descendants(init):
        with contextlib.suppress(OSError):
            ino = os.stat(f"/proc/{pid}/ns/pid").st_ino
            if ino in inodes and ino not in found:
                found[ino] = pid
    return found


def attempt(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except OSError as err:
        return ("errno", errno.errorcode.get(err.errno or 0, str(err.errno)))


def status_fields(path: str) -> dict[str, str]:
    out = {}
    for line in Path(path).read_text().splitlines():
        key, _, value = line.partition(":")
        if key in STATUS_KEYS:
            out[key] = " ".join(value.split())
        if key == "State":
            out["Zombie"] = str(value.strip().startswith("Z"))
    return out


def stat_fields(path: str) -> list[str]:
    data = Path(path).read_text()
    close = data.rfind(")")
    fields = [data[: data.find(" (")], data[data.find("(") + 1 : close], *data[close + 2 :].split()]
    return [fields[i] for i in STAT_FIELDS]


def task_dir(view: str, pid: str) -> dict[str, Any]:
    base = f"{view}/{pid}"
    tids = attempt(os.listdir, f"{base}/task")
    out: dict[str, Any] = {
        "status": attempt(status_fields, f"{base}/status"),
        "stat": attempt(stat_fields, f"{base}/stat"),
        "tasks": tids,
        "ns": attempt(os.readlink, f"{base}/ns/pid"),
        "exe": attempt(os.readlink, f"{base}/exe"),
        "cwd": attempt(os.readlink, f"{base}/cwd"),
        # a zombie's net/ lists as EINVAL in the kernel (no network namespace left to show)
        "net": attempt(lambda: sorted(os.listdir(f"{base}/net"))),
        "cmdline": attempt(Path(f"{base}/cmdline").read_bytes),
        "mode": attempt(lambda: oct(os.stat(base).st_mode)),
    }
    if isinstance(tids, list):
        for tid in tids:
            out[f"task/{tid}/status"] = attempt(status_fields, f"{base}/task/{tid}/status")
            out[f"task/{tid}/children"] = attempt(
                lambda t=tid: sorted(Path(f"{base}/task/{t}/children").read_text().split())
            )
            if tid != pid:  # a non-leader tid opens at the top although not listed
                out[f"/{tid}/status"] = attempt(status_fields, f"{view}/{tid}/status")
    return out


def top(view: str) -> dict[str, Any]:
    return {
        "listing": os.listdir(view),
        "self": attempt(os.readlink, f"{view}/self"),
        "self_lstat": attempt(lambda: oct(os.lstat(f"{view}/self").st_mode)),
        "thread-self": attempt(os.readlink, f"{view}/thread-self"),
        "missing": attempt(os.stat, f"{view}/999999"),
        "outsider": attempt(
            lambda: (
                os.path.exists(f"{view}/{os.getpid()}")
                and status_fields(f"{view}/{os.getpid()}/status")["Name"]
            )
        ),
        "task_of_other": attempt(os.stat, f"{view}/1/task/999999"),
    }


def compare(fuse: str, kernel: str, settle: float) -> list[str]:
    """Differences between the two views. A task that exits during the walk can make the two walks
    differ; after `settle` seconds both views must agree again, so differing parts are walked once
    more and only what still differs is reported."""
    a, b = top(fuse), top(kernel)
    pids = sorted({n for n in a["listing"] + b["listing"] if n.isdigit()}, key=int)
    differing = [pid for pid in pids if task_dir(fuse, pid) != task_dir(kernel, pid)]
    top_differs = a != b
    if differing or top_differs:
        time.sleep(settle)
    problems = []
    if top_differs:
        a, b = top(fuse), top(kernel)
        problems += [f"{k}: fuse {a[k]!r} kernel {b[k]!r}" for k in a if a[k] != b[k]]
    for pid in differing:
        fa, ka = task_dir(fuse, pid), task_dir(kernel, pid)
        if fa != ka:
            diffs = {k: (fa.get(k), ka.get(k)) for k in set(fa) | set(ka) if fa.get(k) != ka.get(k)}
            problems.append(f"/{pid}: {diffs}")
    return problems
