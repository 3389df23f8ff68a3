"""The init of one churn namespace (run by the soak with the host's python, no pidns imports).

    churn_init.py DEPTH BATCH WORKDIR

It starts the next level below itself (`unshare --pid --fork --mount-proc` running this script with
DEPTH - 1) when DEPTH > 1, keeps two idle threads (so task/ directories list several), runs the
churn loop as a dash child, and reaps every child and orphan until it is killed. The churn loop
forks BATCH short-lived subshells, one orphan that lives 200 ms (reparented here), and one pacing
`sleep 0.03` per round, from when WORKDIR/go exists until WORKDIR/stop does; then it writes the
count of tasks it created to WORKDIR/count.<DEPTH>.
"""

import os
import sys
import threading
import time

depth, batch, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
LOOP = r"""
while [ ! -e "$1/go" ]; do sleep 0.05; done
i=0
while [ ! -e "$1/stop" ]; do
    n=0
    while [ $n -lt $2 ]; do (:); n=$((n + 1)); done
    (sleep 0.2 &)
    sleep 0.03
    i=$((i + $2 + 3))
done
echo $i > "$1/count.$3"
"""

for _ in range(2):
    threading.Thread(target=time.sleep, args=(1e6,), daemon=True).start()
if depth > 1:
    os.spawnv(
        os.P_NOWAIT,
        "/usr/bin/unshare",
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            sys.executable,
            "-S",
            "-I",
            __file__,
            str(depth - 1),
            str(batch),
            work,
        ],
    )
os.spawnv(os.P_NOWAIT, "/bin/dash", ["dash", "-c", LOOP, "churn", work, str(batch), str(depth)])
with open(f"{work}/ready.{depth}", "w") as f:
    f.write(str(os.getpid()))
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.1)
    except InterruptedError:
        continue
