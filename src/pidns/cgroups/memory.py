"""A cgroup's memory: the limit the kernel enforces (the smallest on the path to the root), usage,
memory.stat, swap. v1: memory.limit_in_bytes, usage_in_bytes, memsw.*, swappiness; v2:
memory.max, memory.current, memory.swap.max/current (v2's swap limit is swap alone, v1's memsw
is memory plus swap)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pidns.cgroups.layout import Cgroup, Dir, read_text

# v1 prints "no limit" as the largest page-aligned signed 64-bit number; anything at least this
# large is no limit.
UNLIMITED_V1 = 1 << 62


@dataclass(frozen=True, slots=True)
class Memory:
    """In bytes. None: no limit (or the file is not there: swap accounting off)."""

    v2: bool
    limit: int | None
    usage: int
    swap_limit: int | None  # v1: memory+swap (memsw); v2: swap alone
    swap_usage: int | None  # v1: memory+swap; v2: swap alone
    swappiness: int | None
    stat: dict[str, int] = field(default_factory=dict)

    def get(self, v1_key: str, v2_key: str | None = None) -> int:
        """A memory.stat counter for the whole subtree: v1's total_* line, v2's own line."""
        if self.v2:
            return self.stat.get(v2_key or v1_key, 0)
        return self.stat.get(f"total_{v1_key}", 0)

    @property
    def swap_total(self) -> int | None:
        """Swap alone the cgroup may use, None without a swap limit."""
        if self.swap_limit is None:
            return None
        if self.v2:
            return self.swap_limit
        return max(0, self.swap_limit - (self.limit or 0)) if self.limit is not None else None

    @property
    def swap_used(self) -> int:
        if self.swap_usage is None:
            return 0
        if self.v2:
            return self.swap_usage
        return max(0, self.swap_usage - self.usage)


def parse_limit(text: str | None) -> int | None:
    """A limit file's value: None for no limit ("max", v1's huge number) or no file."""
    if text is None:
        return None
    word = text.strip()
    if not word or word == "max":
        return None
    try:
        value = int(word)
    except ValueError:
        return None
    return None if value >= UNLIMITED_V1 or value < 0 else value


def parse_flat_keyed(text: str | None) -> dict[str, int]:
    """memory.stat, cpu.stat, pids.events: "key value" lines."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


def min_limit(d: Dir, name: str) -> int | None:
    """The smallest limit in file `name` on the path from d to its hierarchy's root."""
    best: int | None = None
    for at in d.up():
        if at.is_top and at.v2:
            break  # the v2 root has no limit files
        value = parse_limit(read_text(at.file(name)))
        if value is not None and (best is None or value < best):
            best = value
    return best


def _int(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def memory(cg: Cgroup) -> Memory | None:
    """The cgroup's memory, None when it has no memory controller (or its files are gone)."""
    d = cg.get("memory")
    if d is None:
        return None
    if d.v2:
        usage = _int(read_text(d.file("memory.current")))
        if usage is None:
            return None
        return Memory(
            True,
            min_limit(d, "memory.max"),
            usage,
            min_limit(d, "memory.swap.max"),
            _int(read_text(d.file("memory.swap.current"))),
            None,  # v2 has no per-cgroup swappiness
            parse_flat_keyed(read_text(d.file("memory.stat"))),
        )
    usage = _int(read_text(d.file("memory.usage_in_bytes")))
    if usage is None:
        return None
    stat = parse_flat_keyed(read_text(d.file("memory.stat")))
    # v1's memory.stat has the kernel's own minimum over the path (hierarchical_*_limit): one
    # file instead of one per ancestor; a tree without those lines is walked
    limit = (
        parse_limit(str(stat["hierarchical_memory_limit"]))
        if "hierarchical_memory_limit" in stat
        else min_limit(d, "memory.limit_in_bytes")
    )
    memsw_usage = _int(read_text(d.file("memory.memsw.usage_in_bytes")))
    if memsw_usage is None:  # no swap accounting
        swap_limit = None
    elif "hierarchical_memsw_limit" in stat:
        swap_limit = parse_limit(str(stat["hierarchical_memsw_limit"]))
    else:
        swap_limit = min_limit(d, "memory.memsw.limit_in_bytes")
    return Memory(
        False,
        limit,
        usage,
        swap_limit,
        memsw_usage,
        _int(read_text(d.file("memory.swappiness"))),
        stat,
    )
