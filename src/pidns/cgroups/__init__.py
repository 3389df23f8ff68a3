"""Reading a cgroup's limits and accounting, cgroup v1 and v2: pure readers over its files.

layout.py finds a process's cgroup directories from /proc/PID/cgroup and the cgroup mounts;
memory.py, cpu.py, io.py, psi.py and pids.py read what one cgroup's files say, each file of that
cgroup (and, for limits, its ancestors') and nothing host-wide. Nothing here writes; making
cgroups is runtime/cgroup.py's job.
"""
