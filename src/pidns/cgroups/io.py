"""A cgroup's block I/O per device, in diskstats' terms (completed ops, sectors, ms).

v1: the CFQ files (blkio.io_serviced_recursive, io_merged, io_service_bytes, io_service_time,
io_wait_time) where the kernel still has them (before 5.0), else the throttle layer's
blkio.throttle.io_serviced_recursive and io_service_bytes_recursive, which every v1 kernel keeps
(counts and bytes only: no merges, no times). v2: io.stat ("8:0 rbytes=… wbytes=… rios=… wios=…
dbytes=… dios=…").
"""

from __future__ import annotations

from dataclasses import dataclass

from pidns.cgroups.layout import Cgroup, read_text

Device = tuple[int, int]


@dataclass(slots=True)
class DiskIo:
    reads: int = 0
    reads_merged: int = 0
    read_bytes: int = 0
    read_ms: int = 0
    writes: int = 0
    writes_merged: int = 0
    write_bytes: int = 0
    write_ms: int = 0
    io_ms: int = 0
    discards: int = 0
    discards_merged: int = 0
    discard_bytes: int = 0
    discard_ms: int = 0

    def any(self) -> bool:
        return any(getattr(self, f) for f in self.__slots__)


def parse_blkio(text: str | None) -> dict[Device, dict[str, int]]:
    """A v1 blkio file: "8:0 Read 123" lines (and "Total N") -> device -> {op: value}."""
    out: dict[Device, dict[str, int]] = {}
    for line in (text or "").splitlines():
        words = line.split()
        if len(words) != 3 or ":" not in words[0]:
            continue
        major, _, minor = words[0].partition(":")
        try:
            out.setdefault((int(major), int(minor)), {})[words[1]] = int(words[2])
        except ValueError:
            continue
    return out


def parse_io_stat(text: str | None) -> dict[Device, dict[str, int]]:
    """v2 io.stat: "8:0 rbytes=1 wbytes=2 …" lines -> device -> {key: value}."""
    out: dict[Device, dict[str, int]] = {}
    for line in (text or "").splitlines():
        words = line.split()
        if not words or ":" not in words[0]:
            continue
        major, _, minor = words[0].partition(":")
        try:
            dev = (int(major), int(minor))
        except ValueError:
            continue
        values = out.setdefault(dev, {})
        for word in words[1:]:
            key, _, value = word.partition("=")
            try:
                values[key] = int(value)
            except ValueError:
                continue
    return out


_NS_PER_MS = 1_000_000


def disk_io(cg: Cgroup) -> dict[Device, DiskIo] | None:
    """Per-device I/O of the cgroup's subtree, None without an io (blkio) controller."""
    d = cg.get("blkio")
    if d is None:
        return None
    out: dict[Device, DiskIo] = {}
    if d.v2:
        for dev, v in parse_io_stat(read_text(d.file("io.stat"))).items():
            out[dev] = DiskIo(
                reads=v.get("rios", 0),
                read_bytes=v.get("rbytes", 0),
                writes=v.get("wios", 0),
                write_bytes=v.get("wbytes", 0),
                discards=v.get("dios", 0),
                discard_bytes=v.get("dbytes", 0),
            )
        return out
    serviced_text = read_text(d.file("blkio.io_serviced_recursive"))
    if serviced_text is None:  # no CFQ: the throttle layer's counts
        serviced = parse_blkio(read_text(d.file("blkio.throttle.io_serviced_recursive")))
        nbytes = parse_blkio(read_text(d.file("blkio.throttle.io_service_bytes_recursive")))
        merged: dict[Device, dict[str, int]] = {}
        service: dict[Device, dict[str, int]] = {}
        wait: dict[Device, dict[str, int]] = {}
    else:
        serviced = parse_blkio(serviced_text)
        nbytes = parse_blkio(read_text(d.file("blkio.io_service_bytes_recursive")))
        merged = parse_blkio(read_text(d.file("blkio.io_merged_recursive")))
        service = parse_blkio(read_text(d.file("blkio.io_service_time_recursive")))
        wait = parse_blkio(read_text(d.file("blkio.io_wait_time_recursive")))
    for dev in set(serviced) | set(nbytes):
        s, b = serviced.get(dev, {}), nbytes.get(dev, {})
        m, t, w = merged.get(dev, {}), service.get(dev, {}), wait.get(dev, {})

        def ms(op: str, t: dict[str, int] = t, w: dict[str, int] = w) -> int:
            return t.get(op, 0) // _NS_PER_MS + w.get(op, 0) // _NS_PER_MS

        out[dev] = DiskIo(
            reads=s.get("Read", 0),
            reads_merged=m.get("Read", 0),
            read_bytes=b.get("Read", 0),
            read_ms=ms("Read"),
            writes=s.get("Write", 0),
            writes_merged=m.get("Write", 0),
            write_bytes=b.get("Write", 0),
            write_ms=ms("Write"),
            io_ms=t.get("Total", 0) // _NS_PER_MS,
            discards=s.get("Discard", 0),
            discards_merged=m.get("Discard", 0),
            discard_bytes=b.get("Discard", 0),
            discard_ms=ms("Discard"),
        )
    return out
