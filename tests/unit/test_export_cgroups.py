"""The pids limit of a namespace's init, on fixture cgroup trees (v2 most of all: this machine's
hosts mount v1, where the integration test runs against the kernel's own files)."""

from __future__ import annotations

import os
from pathlib import Path

from pidns.export.cgroups import V1, V2, PidsLimit, PidsLimits, find_hierarchy, task_cgroup


def cgroup(base: Path, path: str, maximum: str | None, current: int | None = None) -> None:
    directory = base / path.strip("/")
    directory.mkdir(parents=True, exist_ok=True)
    if maximum is not None:
        (directory / "pids.max").write_text(maximum + "\n")
    if current is not None:
        (directory / "pids.current").write_text(f"{current}\n")
    (directory / "cgroup.procs").touch()


def v2_tree(tmp: Path) -> Path:
    root = tmp / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.procs").write_text("1\n")
    cgroup(root, "/kubepods.slice", "max", 40)
    cgroup(root, "/kubepods.slice/pod-a", "100", 7)
    cgroup(root, "/kubepods.slice/pod-a/ctr-1", "max", 5)  # no limit of its own: pod-a's
    cgroup(root, "/system.slice/sshd.service", "max", 1)
    return root


def proc_with(tmp: Path, lines: dict[int, str]) -> int:
    proc = tmp / "proc"
    for pid, text in lines.items():
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cgroup").write_text(text)
    return os.open(proc, os.O_RDONLY | os.O_DIRECTORY)


def test_v2_nearest_limit_above_the_init(tmp_path: Path) -> None:
    root = v2_tree(tmp_path)
    hierarchy = find_hierarchy(str(root))
    assert hierarchy is not None and hierarchy.kind == V2 and hierarchy.mount == str(root)
    fd = proc_with(
        tmp_path, {42: "0::/kubepods.slice/pod-a/ctr-1\n", 7: "0::/system.slice/sshd.service\n"}
    )
    try:
        path = task_cgroup(fd, 42, hierarchy)
        assert path == "/kubepods.slice/pod-a/ctr-1"
        limits = PidsLimits(hierarchy, str(tmp_path / "proc"))
        assert limits.limit(path) == PidsLimit(100, 7, "/kubepods.slice/pod-a")
        # no number anywhere up to the root (whose pids.max does not exist): no limit
        other = task_cgroup(fd, 7, hierarchy)
        assert other is not None and limits.limit(other) is None
        assert task_cgroup(fd, 999, hierarchy) is None  # gone
    finally:
        os.close(fd)


def test_hybrid_host_uses_the_unified_hierarchy_only_when_it_has_pids(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    (root / "unified").mkdir(parents=True)
    (root / "unified" / "cgroup.controllers").write_text("")  # empty v2, as on hybrid hosts
    assert find_hierarchy(str(root)) is None
    (root / "pids").mkdir()
    (root / "pids" / "cgroup.procs").write_text("1\n")
    hierarchy = find_hierarchy(str(root))
    assert hierarchy is not None and hierarchy.kind == V1
    assert hierarchy.mount == str(root / "pids")


def test_v1_reads_the_pids_line(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    (root / "pids").mkdir(parents=True)
    (root / "pids" / "cgroup.procs").touch()
    cgroup(root / "pids", "/libpod_parent/libpod-abc", "2048", 3)
    hierarchy = find_hierarchy(str(root))
    assert hierarchy is not None
    text = "9:name=systemd:/x\n8:pids:/libpod_parent/libpod-abc\n4:memory:/y\n0::/\n"
    fd = proc_with(tmp_path, {5: text})
    try:
        path = task_cgroup(fd, 5, hierarchy)
        assert path == "/libpod_parent/libpod-abc"
        assert PidsLimits(hierarchy).limit(path) == PidsLimit(2048, 3, path)
    finally:
        os.close(fd)


def test_paths_outside_the_readers_cgroup_namespace(tmp_path: Path) -> None:
    """In a pod, /proc/PID/cgroup of a host task reads `/../../…` from the exporter's own
    cgroup namespace root; the host's hierarchy, mounted whole, tells where that root is."""
    root = v2_tree(tmp_path)
    ours = "/kubepods.slice/pod-exporter/ctr"
    cgroup(root, ours, "max", 2)
    (root / ours.strip("/") / "cgroup.procs").write_text(f"{os.getpid()}\n")
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("0::/\n")  # the exporter sits at its namespace root
    hierarchy = find_hierarchy(str(root))
    assert hierarchy is not None
    limits = PidsLimits(hierarchy, str(proc))
    assert limits.limit("/../../pod-a/ctr-1") == PidsLimit(100, 7, "/kubepods.slice/pod-a")
    assert limits.limit("/../../../../../../escape") is None  # above what is mounted
    assert limits.limit("relative") is None


def test_numbers_only(tmp_path: Path) -> None:
    root = v2_tree(tmp_path)
    (root / "kubepods.slice" / "pod-a" / "pids.current").write_text("garbage\n")
    hierarchy = find_hierarchy(str(root))
    assert hierarchy is not None
    assert PidsLimits(hierarchy).limit("/kubepods.slice/pod-a") is None
