"""pidns inside a chroot (build chroots, some CI runners). Joining a mount namespace resets the
root to that namespace's root: a process that Sandbox.spawn or `pidns exec` starts must still
see the chroot as `/`, as the namespace's init does, and start in the caller's cwd there. In a
chroot whose `/` is not a mount point, `pidns run` cannot make its mounts private: it says why
and what to do."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.users import REPO

pytestmark = pytest.mark.root

ONLY_INSIDE = "/only-in-the-chroot"  # a cwd the host's tree doesn't have

# Runs inside the chroot: where do a spawned process and an exec'd one find `/` and their cwd?
INSIDE = r"""
import json, os, subprocess, sys
import pidns

WHERE = "import json, os; s = os.stat('/'); print(json.dumps([s.st_dev, s.st_ino, os.getcwd()]))"
os.chdir(sys.argv[1])
mine = os.stat("/")
with pidns.Sandbox() as sb:
    init = sb.init_pids[-1]
    theirs = os.stat(f"/proc/{init}/root/")
    p = sb.spawn([sys.executable, "-c", WHERE], stdout=subprocess.PIPE, text=True)
    spawned = json.loads(p.communicate(timeout=30)[0] or "null")
    e = subprocess.run([sys.executable, "-m", "pidns.cli.main", "exec", "--ns", f"@{init}", "--",
                        sys.executable, "-c", WHERE], capture_output=True, text=True, timeout=60)
print(json.dumps({
    "mine": [mine.st_dev, mine.st_ino, os.getcwd()],
    "init": [theirs.st_dev, theirs.st_ino],
    "spawned": spawned,
    "exec": json.loads(e.stdout or "null"),
    "exec_stderr": e.stderr,
}))
"""


def _in_chroot(
    tree: Path, argv: list[str], *, root_is_a_mount: bool
) -> subprocess.CompletedProcess[str]:
    """Run argv chrooted into tree, from a private mount namespace that has the host's /usr and
    /etc, this Python and this checkout bound read-only at their own paths, /dev, a /proc and a
    /tmp. root_is_a_mount: bind tree onto itself first, so that the chroot's `/` is a mount."""
    lines = ["set -e"]
    if root_is_a_mount:
        lines.append(f"mount --bind {tree} {tree}")
    binds = ["/usr", "/etc", sys.prefix, sys.base_prefix, str(REPO)]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/") / name
        if host.is_symlink():
            (tree / name).symlink_to(os.readlink(host))
        elif host.is_dir():
            binds.append(str(host))
    for path in dict.fromkeys(binds):
        inside = shlex.quote(f"{tree}{path}")
        lines += [f"mkdir -p {inside}", f"mount --rbind -o ro {shlex.quote(path)} {inside}"]
    for name in ("dev", "proc", "tmp", "run", ONLY_INSIDE.lstrip("/")):
        (tree / name).mkdir()
    lines += [f"mount --rbind /dev {tree}/dev", f"mount -t proc proc {tree}/proc",
              f"mount -t tmpfs tmpfs {tree}/tmp", f"mount -t tmpfs tmpfs {tree}/run",
              f'exec chroot {tree} "$@"']  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PIDNS_STATE_DIR"}
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines), "sh", *argv],
        capture_output=True, text=True, timeout=120, env=env, cwd="/",
    )  # fmt: skip


def test_spawned_and_exec_processes_see_the_chroot_as_the_init_does(tmp_path: Path) -> None:
    done = _in_chroot(tmp_path, [sys.executable, "-c", INSIDE, ONLY_INSIDE], root_is_a_mount=True)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["init"] == out["mine"][:2]  # the init runs in the chroot
    assert out["spawned"] == [*out["init"], ONLY_INSIDE], done.stdout
    assert out["exec"] == [*out["init"], ONLY_INSIDE], out["exec_stderr"]


def test_run_in_a_chroot_whose_root_is_no_mount_says_what_to_do(tmp_path: Path) -> None:
    done = _in_chroot(tmp_path, [sys.executable, "-m", "pidns.cli.main", "run", "--", "true"],
                      root_is_a_mount=False)  # fmt: skip
    assert done.returncode == 125
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("pidns: error: "), done.stderr
    assert "/ is not a mount point" in done.stderr
    assert "mount --bind DIR DIR" in done.stderr
