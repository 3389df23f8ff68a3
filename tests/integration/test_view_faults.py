"""Daemon faults: a killed daemon leaves readers an error, never a hang, and its mountpoints
recoverable; a failing handler in one view leaves every other view (and the daemon) answering."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.soak.support import (
    daemon_pid,
    namespace,
    patched_daemon,
    pidns,
    private_daemon,
)

pytestmark = [pytest.mark.root, pytest.mark.fuse]

# Reads the view in a loop until an access fails; prints that errno's name. A separate process, so
# that a reader stuck in the kernel shows up as a timeout here instead of hanging the suite.
_READER = """
import errno, os, sys
root = sys.argv[1]
sys.stdout.write("ready\\n"); sys.stdout.flush()
while True:
    try:
        for name in os.listdir(root):
            if name.isdigit():
                with open(os.path.join(root, name, "status"), "rb") as f:
                    f.read()
                os.listdir(os.path.join(root, name, "task"))
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ESRCH):
            continue  # a task that exited meanwhile
        print(errno.errorcode.get(err.errno, str(err.errno)))
        break
"""


@contextlib.contextmanager
def readers(roots: list[Path], per_root: int = 2) -> Iterator[list[subprocess.Popen[str]]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _READER, str(root)], stdout=subprocess.PIPE, text=True
        )
        for root in roots
        for _ in range(per_root)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _states() -> dict[str, dict[str, object]]:
    done = pidns("mounts", "--json")
    assert done.returncode == 0, done.stderr
    return {v["mountpoint"]: v for v in json.loads(done.stdout)}


def test_sigkill_daemon_readers_get_an_error_and_mountpoints_recover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the kernel cannot send a dead daemon's requests again (pretended here: the daemon
    does not use NOTIFY_RESEND), a killed daemon's views end: ENOTCONN, recoverable."""
    monkeypatch.setenv("PIDNS_FUSE_RESEND", "0")
    with (
        private_daemon(tmp_path),
        namespace() as ns_a,
        namespace() as ns_b,
    ):
        a, b = tmp_path / "a", tmp_path / "b"
        for ns, mp in ((ns_a, a), (ns_b, b)):
            mp.mkdir()
            done = pidns("mount", "--backend", "fuse", f"@{ns}", str(mp))
            assert done.returncode == 0, done.stderr
        assert {s["state"] for s in _states().values()} == {"alive"}
        with readers([a, b]) as procs:
            time.sleep(0.5)  # the readers are mid-walk
            assert all(p.poll() is None for p in procs), "a reader failed before the kill"
            os.kill(daemon_pid(), signal.SIGKILL)
            seen = []
            for proc in procs:
                try:
                    out, _ = proc.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    pytest.fail("a reader hangs after the daemon was killed")
                seen.append(out.strip())
        assert set(seen) <= {"ENOTCONN", "ECONNABORTED"}, seen
        with pytest.raises(OSError) as err:
            os.listdir(a)
        assert err.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)

        states = _states()
        assert states[str(a)]["state"] == states[str(b)]["state"] == "disconnected"
        assert states[str(a)]["alive"] is False

        done = pidns("umount", str(a))  # recovers the dead mountpoint
        assert done.returncode == 0, done.stderr
        assert os.listdir(a) == [] and str(a) not in _states()

        done = pidns("mount", "--backend", "fuse", f"@{ns_b}", str(b))  # over the dead one
        assert done.returncode == 0, done.stderr
        assert "1" in os.listdir(b)
        assert _states()[str(b)]["state"] == "alive"
        assert pidns("umount", str(b)).returncode == 0


def test_a_stopped_daemon_is_cut_off_by_the_kernel_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon that stops answering (stopped here; a bug would do the same) with no holder to
    replace it (stopped too) would hang every reader of its views: the kernel aborts the
    connection once a request has waited the request timeout (15 s here, the least it allows; it
    looks every 15 s), and readers get ENOTCONN. (With the holder running, the daemon is replaced
    instead: tests/integration/test_view_takeover.py.)"""
    from pidns.view import holding

    monkeypatch.setenv("PIDNS_REQUEST_TIMEOUT", "15")
    with private_daemon(tmp_path), namespace() as ns:
        view = tmp_path / "v"
        view.mkdir()
        assert pidns("mount", "--backend", "fuse", f"@{ns}", str(view)).returncode == 0
        daemon = daemon_pid()
        status = holding.status()
        assert status is not None
        holder = int(status["holder"])
        with readers([view], per_root=1) as procs:
            os.kill(holder, signal.SIGSTOP)
            os.kill(daemon, signal.SIGSTOP)
            try:
                started = time.monotonic()
                try:
                    out, _ = procs[0].communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    pytest.fail("the reader still hangs a minute after the daemon stopped")
                print(f"\nreader cut off {time.monotonic() - started:.0f} s after the stop")
            finally:
                os.kill(daemon, signal.SIGCONT)
                os.kill(holder, signal.SIGCONT)
        assert out.strip() in ("ENOTCONN", "ECONNABORTED")
        assert _states()[str(view)]["state"] == "disconnected"
        assert pidns("umount", str(view)).returncode == 0


# A daemon whose status rendering fails for one namespace only: what an unexpected bug in one
# view's handler looks like. The rest of the daemon is the real one.
_FAULTY_DAEMON = """
import os, sys
from pidns.view import nodes
from pidns.view.daemon import main

FAULT_NS = int(os.environ["FAULT_NS"])
content = nodes.Rendered.content
listing = nodes.Root.listing

def faulty_content(self, req):
    if self.task.view.instance.id.ino == FAULT_NS:
        raise RuntimeError("injected fault")
    return content(self, req)

def faulty_listing(self, req):
    if self.view.instance.id.ino == FAULT_NS:
        raise ZeroDivisionError("injected fault")
    return listing(self, req)

nodes.Rendered.content = faulty_content
nodes.Root.listing = faulty_listing
sys.exit(main())
"""


def test_a_failing_view_gets_eio_and_the_others_keep_answering(tmp_path: Path) -> None:
    with (
        private_daemon(tmp_path, start=False) as state_dir,
        namespace() as ns_bad,
        namespace() as ns_good,
    ):
        bad_ino = os.stat(f"/proc/{ns_bad}/ns/pid").st_ino
        daemon = patched_daemon(state_dir, _FAULTY_DAEMON, {**os.environ, "FAULT_NS": str(bad_ino)})
        try:
            bad, good, also_bad = tmp_path / "bad", tmp_path / "good", tmp_path / "bad2"
            for ns, mp in ((ns_bad, bad), (ns_good, good), (ns_bad, also_bad)):
                mp.mkdir()
                done = pidns("mount", "--backend", "fuse", f"@{ns}", str(mp))
                assert done.returncode == 0, done.stderr
            assert daemon_pid() == daemon.pid
            for _ in range(50):
                for root in (bad, also_bad):
                    with pytest.raises(OSError) as err:
                        (root / "1" / "status").read_bytes()
                    assert err.value.errno == errno.EIO
                    with pytest.raises(OSError) as err:
                        os.listdir(root)
                    assert err.value.errno == errno.EIO
                    # the same view still answers every request that does not hit the fault
                    assert (root / "1" / "cmdline").read_bytes().startswith(b"sh")
                assert b"\nPid:\t1\n" in (good / "1" / "status").read_bytes()
                assert "1" in os.listdir(good)
            assert daemon.poll() is None
            assert {s["state"] for s in _states().values()} == {"alive"}
            log = (state_dir / "daemon.log").read_text()
            assert "injected fault" in log and "RuntimeError" in log
            for mp in (bad, good, also_bad):
                assert pidns("umount", str(mp)).returncode == 0
        finally:
            if daemon.poll() is None:
                daemon.terminate()
            daemon.wait(10)
