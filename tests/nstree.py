"""Build real nested PID namespaces for tests with util-linux's unshare (an independent tool, so
the inspector is not tested by its own runtime). Each level runs a plain sleeper, a threaded
process, a zombie (a child its exec'd parent never reaps) and a setsid session leader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

PER_LEVEL = {
    "sleep": "sleep 600 &",
    "threads": (
        f"{sys.executable} -c 'import threading,time;"
        "[threading.Thread(target=time.sleep,args=(600,),daemon=True).start() for _ in range(2)];"
        "time.sleep(600)' &"
    ),
    "zombie": "sh -c 'sleep 0 & exec sleep 600' &",
    "setsid": "setsid sleep 600 &",
}


@dataclass
class Tree:
    launcher: subprocess.Popen[bytes]
    inits: list[int]  # host pids of each level's init, outermost first

    def ns_inode(self, level: int) -> int:
        """Inode of the namespace at `level` (1 = outermost created)."""
        return os.stat(f"/proc/{self.inits[level - 1]}/ns/pid").st_ino


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _wait_for(predicate: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.05)
    raise TimeoutError("namespace tree did not come up")


@contextmanager
def nested_tree(depth: int, kinds: tuple[str, ...] = tuple(PER_LEVEL)) -> Iterator[Tree]:
    """`depth` nested namespaces, each running `kinds` plus the next level's unshare."""
    with tempfile.TemporaryDirectory(prefix="pidns-tree-") as tmp:
        for level in range(1, depth + 1):
            lines = [PER_LEVEL[k] for k in kinds]
            if level < depth:
                lines.append(f"unshare --pid --fork --mount-proc sh {tmp}/level{level + 1}.sh &")
            lines.append("wait")
            Path(f"{tmp}/level{level}.sh").write_text("\n".join(lines) + "\n")
        launcher = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "sh", f"{tmp}/level1.sh"]
        )
        inits: list[int] = []
        try:

            def ready() -> bool:
                inits.clear()
                pid = launcher.pid
                for _ in range(depth):
                    # the init of the next level is the only child of an unshare process
                    unshares = [pid] if not inits else _unshare_children(inits[-1])
                    found = [c for u in unshares for c in _children(u)]
                    if len(found) != 1:
                        return False
                    inits.append(found[0])
                # every level runs all its kinds (+1 unshare below all but the last)
                return all(
                    len(_children(init)) >= len(kinds) + (1 if i < depth - 1 else 0)
                    for i, init in enumerate(inits)
                ) and _zombies_ready(inits, kinds)

            _wait_for(ready)
            yield Tree(launcher, list(inits))
        finally:
            if inits:
                with suppress(ProcessLookupError):
                    os.kill(inits[0], signal.SIGKILL)
            launcher.kill()
            launcher.wait(timeout=10)


def _unshare_children(init: int) -> list[int]:
    return [c for c in _children(init) if _comm(c) == "unshare"]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _zombies_ready(inits: list[int], kinds: tuple[str, ...]) -> bool:
    if "zombie" not in kinds:
        return True
    for init in inits:
        parents = [c for c in _children(init) if _comm(c) == "sleep"]
        if not any(_state(z) == "Z" for p in parents for z in _children(p)):
            return False
    return True


def _state(pid: int) -> str:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return ""
    return data[data.rfind(b")") + 2 :][:1].decode()


@contextmanager
def kernel_proc(init_pid: int) -> Iterator[Path]:
    """A procfs owned by the namespace of `init_pid`, mounted from the host (the oracle)."""
    with tempfile.TemporaryDirectory(prefix="pidns-oracle-") as tmp:
        subprocess.run(
            ["mount", "-t", "proc", "-o", f"pidns=/proc/{init_pid}/ns/pid", "proc", tmp],
            check=True,
        )
        try:
            yield Path(tmp)
        finally:
            subprocess.run(["umount", "-l", tmp], check=False)
