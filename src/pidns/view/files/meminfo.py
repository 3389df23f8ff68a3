"""/proc/meminfo of a cgroup (--virtualize): LXCFS's rules, from the cgroup's memory files.

MemTotal is the smallest limit on the cgroup's path (the host's MemTotal when none is smaller);
MemFree is the limit less the usage; MemAvailable adds the page cache back (it can be reclaimed);
Cached, Active/Inactive (anon, file), Unevictable, Dirty, Writeback, Mapped, Shmem, AnonPages and
AnonHugePages come from memory.stat (v1's total_* lines, v2's own: both the whole subtree);
Buffers, SwapCached, Slab and its parts, ShmemHugePages and ShmemPmdMapped are 0 (no cgroup
figure); every other line is the host's. Swap: the swap alone the cgroup may use (v1: memsw less
memory; v2: memory.swap.max), never more than the host's, and what it uses of it; a swappiness of 0
means no swap (SwapTotal = used).

Where LXCFS 5.0.3 shows other values (docs: README, "Resource virtualisation"): its v1 SwapTotal is
memory + swap; its v1 AnonHugePages is always 0 (a prefix match swallows total_rss_huge); its v2
Mapped, Dirty and Writeback are always 0. Here each is what the kernel's accounting says.
"""

from __future__ import annotations

from pidns.cgroups.memory import Memory

_KB = 1024


def _line(key: bytes, kb: int) -> bytes:
    return b"%-16s%8d kB\n" % (key + b":", max(0, kb))


def host_kb(host_meminfo: bytes, key: bytes) -> int | None:
    for line in host_meminfo.splitlines():
        name, sep, rest = line.partition(b":")
        if sep and name == key:
            words = rest.split()
            return int(words[0]) if words else None
    return None


def swap_kb(mem: Memory, host_swap_total_kb: int) -> tuple[int, int]:
    """(SwapTotal, SwapUsed) in kB, as meminfo and swaps show them."""
    allowed = mem.swap_total
    used = mem.swap_used // _KB
    total = host_swap_total_kb if allowed is None else min(allowed // _KB, host_swap_total_kb)
    if mem.swappiness == 0:
        total = used
    return total, min(used, total)


def render_meminfo(host_meminfo: bytes, mem: Memory | None) -> bytes:
    """The cgroup's meminfo; the host's bytes when it has no memory controller."""
    if mem is None:
        return host_meminfo
    host_total = host_kb(host_meminfo, b"MemTotal") or 0
    limit = host_total if mem.limit is None else min(mem.limit // _KB, host_total)
    usage = min(mem.usage // _KB, limit)
    g = mem.get
    cache = g("cache", "file") // _KB
    active_anon, inactive_anon = g("active_anon") // _KB, g("inactive_anon") // _KB
    active_file, inactive_file = g("active_file") // _KB, g("inactive_file") // _KB
    shmem = g("shmem") // _KB
    swap_total, swap_used = swap_kb(mem, host_kb(host_meminfo, b"SwapTotal") or 0)
    values: dict[bytes, int] = {
        b"MemTotal": limit,
        b"MemFree": limit - usage,
        b"MemAvailable": min(limit, limit - usage + cache),
        b"Buffers": 0,
        b"Cached": cache,
        b"SwapCached": 0,
        b"Active": active_anon + active_file,
        b"Inactive": inactive_anon + inactive_file,
        b"Active(anon)": active_anon,
        b"Inactive(anon)": inactive_anon,
        b"Active(file)": active_file,
        b"Inactive(file)": inactive_file,
        b"Unevictable": g("unevictable") // _KB,
        b"SwapTotal": swap_total,
        b"SwapFree": swap_total - swap_used,
        b"Dirty": g("dirty", "file_dirty") // _KB,
        b"Writeback": g("writeback", "file_writeback") // _KB,
        b"AnonPages": active_anon + inactive_anon - shmem,
        b"Mapped": g("mapped_file", "file_mapped") // _KB,
        b"Shmem": shmem,
        b"Slab": 0,
        b"SReclaimable": 0,
        b"SUnreclaim": 0,
        b"AnonHugePages": g("rss_huge", "anon_thp") // _KB,
        b"ShmemHugePages": 0,
        b"ShmemPmdMapped": 0,
    }
    out = []
    for line in host_meminfo.splitlines(keepends=True):
        key, sep, _ = line.partition(b":")
        value = values.get(key) if sep else None
        out.append(line if value is None else _line(key, value))
    return b"".join(out)


def render_swaps(host_swaps: bytes, host_meminfo: bytes, mem: Memory | None) -> bytes:
    """/proc/swaps of a cgroup: the host's header, then one line for the swap it may use (none
    when that is 0), as LXCFS shows it; the host's file without a memory controller."""
    if mem is None:
        return host_swaps
    header = host_swaps.split(b"\n", 1)[0] + b"\n"
    total, used = swap_kb(mem, host_kb(host_meminfo, b"SwapTotal") or 0)
    if total <= 0:
        return header
    return header + b"none%36svirtual\t\t%d\t%d\t0\n" % (b" ", total, used)
