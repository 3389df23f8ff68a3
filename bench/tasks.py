"""Many live tasks for benchmarks: forked children of one spawner, all in one process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

_SPAWNER = """
import os, signal, sys
n = int(sys.argv[1])
for _ in range(n):
    if os.fork() == 0:
        signal.pause()
        os._exit(0)
sys.stdout.write("ready\\n"); sys.stdout.flush()
signal.pause()
"""


@contextmanager
def live_tasks(count: int) -> Iterator[int]:
    """`count` sleeping processes (plus their parent) until the block ends; yields the parent's pid."""
    spawner = subprocess.Popen(
        [sys.executable, "-c", _SPAWNER, str(count)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert spawner.stdout is not None
        if spawner.stdout.readline() != b"ready\n":
            raise RuntimeError("could not start the benchmark's tasks")
        yield spawner.pid
    finally:
        os.killpg(spawner.pid, signal.SIGKILL)
        spawner.wait()
        time.sleep(0.2)  # let init reap the orphans before the next measurement
