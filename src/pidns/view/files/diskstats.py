"""/proc/diskstats of a cgroup (--virtualize): the host's devices the cgroup did I/O on, with the
cgroup's counts in the kernel's layout (LXCFS's rule; devices it never touched are left out).

The kernel keeps per-cgroup completions, bytes (shown as 512-byte sectors) and, on v1 with CFQ,
merges and service/wait times; in-flight, weighted time and flushes have no cgroup figure: 0.
LXCFS 5.0.3 drops field 15 (discards completed), so its fields 15-17 are the kernel's 16-18, and
it reads only the CFQ files: on kernels without CFQ (5.0+) it shows the host's diskstats.
"""

from __future__ import annotations

from pidns.cgroups.io import Device, DiskIo


def render_diskstats(host_diskstats: bytes, io: dict[Device, DiskIo] | None) -> bytes:
    if io is None:
        return host_diskstats
    out = []
    for line in host_diskstats.splitlines():
        words = line.split()
        if len(words) < 3:
            continue
        try:
            dev = (int(words[0]), int(words[1]))
        except ValueError:
            continue
        s = io.get(dev)
        if s is None or not s.any():
            continue
        fields = (
            s.reads,
            s.reads_merged,
            s.read_bytes // 512,
            s.read_ms,
            s.writes,
            s.writes_merged,
            s.write_bytes // 512,
            s.write_ms,
            0,
            s.io_ms,
            0,
            s.discards,
            s.discards_merged,
            s.discard_bytes // 512,
            s.discard_ms,
            0,
            0,
        )
        out.append(
            b"%4d %7d %s " % (dev[0], dev[1], words[2]) + b" ".join(b"%d" % f for f in fields)
        )
    return b"".join(line + b"\n" for line in out)
