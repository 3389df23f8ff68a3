"""Build a nested PID namespace tree from a JSON spec, print what was built, hold it until stdin closes.

    python builder.py '{"levels": [{"sleepers": 2, "threads": 1, "zombie": true, "setsid": true,
                                    "exiter": 0.05}, ...], "joined": true}'

Prints one JSON line: {"init": host pid of level 1's init, "ns": [inode per level], "joined": host pid}.
Killing the level-1 init (which this does on stdin EOF) takes the whole tree down.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "src"))

from pidns.kernel import syscalls


def sleep_forever() -> None:
    while True:
        signal.pause()


def level(levels: list[dict[str, object]], depth: int, out: int) -> None:
    spec = levels[depth]
    for i in range(int(spec.get("sleepers", 0))):  # type: ignore[call-overload]
        if os.fork() == 0:
            if spec.get("setsid") and i == 0:
                os.setsid()
            if i == 0:
                for _ in range(int(spec.get("threads", 0))):  # type: ignore[call-overload]
                    threading.Thread(target=sleep_forever, daemon=True).start()
            sleep_forever()
    if spec.get("zombie") and os.fork() == 0:
        os._exit(0)  # never reaped: stays a zombie
    delay = spec.get("exiter")
    if delay is not None:
        child = os.fork()
        if child == 0:
            time.sleep(float(delay))  # type: ignore[arg-type]
            os._exit(0)
        threading.Thread(target=os.waitpid, args=(child, 0), daemon=True).start()
    if depth + 1 < len(levels):
        syscalls.unshare(syscalls.CLONE_NEWPID)
        if os.fork() == 0:
            level(levels, depth + 1, out)
    os.write(out, b"%d %d\n" % (depth, os.stat("/proc/self/ns/pid").st_ino))
    sleep_forever()


def main() -> None:
    spec = json.loads(sys.argv[1])
    levels = spec["levels"]
    r, w = os.pipe()
    syscalls.unshare(syscalls.CLONE_NEWPID)
    init = os.fork()
    if init == 0:
        os.close(r)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        level(levels, 0, w)
    os.close(w)
    inodes: dict[int, int] = {}
    with os.fdopen(r, "rb") as lines:
        while len(inodes) < len(levels):
            line = lines.readline()
            if not line:
                break
            depth, ino = map(int, line.split())
            inodes[depth] = ino
    joined = 0
    if spec.get("joined"):
        fd = os.open(f"/proc/{init}/ns/pid", os.O_RDONLY)
        syscalls.setns(fd, syscalls.CLONE_NEWPID)
        os.close(fd)
        joined = os.fork()
        if joined == 0:
            sleep_forever()
    ns = [inodes[d] for d in sorted(inodes)]
    print(json.dumps({"init": init, "ns": ns, "joined": joined}), flush=True)
    sys.stdin.read()
    os.kill(init, signal.SIGKILL)
    if joined:
        os.kill(joined, signal.SIGKILL)
        os.waitpid(joined, 0)
    os.waitpid(init, 0)


if __name__ == "__main__":
    main()
