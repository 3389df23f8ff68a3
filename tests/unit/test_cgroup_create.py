"""Making a run's cgroup (runtime/cgroup.py) on fixture trees laid out as cgroup v1 and v2 lay
them out: where the directory goes, what is written in it and in its parent, and every refusal.
This machine's v2 hierarchy has no controllers, so v2 is tested here only. The parsers of the
limits, and the btime a time namespace's reader sees."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pidns.cgroups.layout import Mount, System
from pidns.errors import LaunchFailed, UsageError
from pidns.runtime import cgroup
from pidns.runtime.cgroup import Limits, create, parse_limits, parse_size, remove_dirs
from pidns.view.files.procstat import boottime_offset, shift_btime
from pidns.view.served import RESOURCE_FILES, overlaid_files

ALL = Limits(memory=64 << 20, cpus=0.5, cpuset=(0,), pids_max=10)


def v2_tree(tmp: Path, controllers: str = "cpuset cpu io memory pids") -> tuple[System, Path]:
    top = tmp / "unified"
    app = top / "user.slice" / "user-1000.slice" / "user@1000.service" / "app.slice"
    (app / "leaf.scope").mkdir(parents=True)
    (top / "cgroup.controllers").write_text(controllers + "\n")
    (app / "cgroup.controllers").write_text(controllers + "\n")
    (app / "cgroup.subtree_control").write_text("")
    mount = Mount("/", str(top), True, frozenset(controllers.split()))
    return System.from_mounts([mount]), app


OWN_V2 = b"0::/user.slice/user-1000.slice/user@1000.service/app.slice/leaf.scope\n"


def test_v2_goes_beside_the_launchers_cgroup_with_the_controllers_enabled(tmp_path: Path) -> None:
    system, app = v2_tree(tmp_path)
    made = create(ALL, system=system, own=OWN_V2, name="pidns-t", janitor=False)
    d = app / "pidns-t"
    assert [m.path for m in made.dirs] == [str(d)]
    assert (app / "cgroup.subtree_control").read_text() == "+cpu +cpuset +memory +pids"
    assert (d / "memory.max").read_text() == str(64 << 20)
    assert (d / "cpu.max").read_text() == "50000 100000"
    assert (d / "cpuset.cpus").read_text() == "0"
    assert (d / "pids.max").read_text() == "10"
    assert made.paths()["unified"] == str(d) and made.paths()["memory"] == str(d)


def test_v2_leaves_enabled_controllers_alone_and_writes_only_what_was_asked(
    tmp_path: Path,
) -> None:
    system, app = v2_tree(tmp_path)
    (app / "cgroup.subtree_control").write_text("memory pids\n")
    create(Limits(memory=8 << 20), system=system, own=OWN_V2, name="pidns-t", janitor=False)
    d = app / "pidns-t"
    assert (app / "cgroup.subtree_control").read_text() == "memory pids\n"
    assert sorted(p.name for p in d.iterdir()) == ["memory.max"]


def test_v2_swap_limit_is_the_swap_alone_and_the_view_shows_it(tmp_path: Path) -> None:
    """--memory 64M --memory-swap 96M: memory.swap.max takes the 32M of swap (v2's limit is
    swap alone); the meminfo and swaps renderers show those 32M from the made directory."""
    from pidns.cgroups.memory import memory
    from pidns.view.files.meminfo import render_meminfo, render_swaps
    from tests.unit.test_resource_render import HOST_MEMINFO

    system, app = v2_tree(tmp_path)
    limits = parse_limits(memory="64M", memory_swap="96M", system=system)
    create(limits, system=system, own=OWN_V2, name="pidns-t", janitor=False)
    d = app / "pidns-t"
    assert (app / "cgroup.subtree_control").read_text() == "+memory"
    assert (d / "memory.max").read_text() == str(64 << 20)
    assert (d / "memory.swap.max").read_text() == str(32 << 20)
    (d / "memory.current").write_text("4194304\n")  # what the kernel would add
    (d / "memory.swap.current").write_text("0\n")
    (d / "memory.stat").write_text("file 0\n")
    cg = system.of_text(OWN_V2.replace(b"leaf.scope", b"pidns-t"))
    shown = render_meminfo(HOST_MEMINFO, memory(cg))
    assert b"MemTotal:          65536 kB\n" in shown
    assert b"SwapTotal:         32768 kB\n" in shown and b"SwapFree:          32768 kB\n" in shown
    swaps = render_swaps(b"Filename\tType\tSize\tUsed\tPriority\n", HOST_MEMINFO, memory(cg))
    assert swaps.splitlines()[1].split() == [b"none", b"virtual", b"32768", b"0", b"0"]


def test_v2_swap_equal_to_memory_is_no_swap(tmp_path: Path) -> None:
    system, app = v2_tree(tmp_path)
    limits = parse_limits(memory="64M", memory_swap="64M", system=system)
    create(limits, system=system, own=OWN_V2, name="pidns-t", janitor=False)
    assert (app / "pidns-t" / "memory.swap.max").read_text() == "0"


def test_v2_at_the_root_is_a_child_of_the_root(tmp_path: Path) -> None:
    system, _ = v2_tree(tmp_path)
    (tmp_path / "unified" / "cgroup.subtree_control").write_text("")
    made = create(Limits(pids_max=5), system=system, own=b"0::/\n", name="pidns-t", janitor=False)
    assert made.dirs[0].path == str(tmp_path / "unified" / "pidns-t")
    assert (tmp_path / "unified" / "cgroup.subtree_control").read_text() == "+pids"


def test_v2_without_the_controller_says_so(tmp_path: Path) -> None:
    system, app = v2_tree(tmp_path, controllers="cpu pids")
    with pytest.raises(LaunchFailed, match="the memory controller is in no v1 hierarchy"):
        create(Limits(memory=8 << 20), system=system, own=OWN_V2, janitor=False)
    assert not any(p.name.startswith("pidns-") for p in app.iterdir())


def test_v2_not_ours_is_a_clear_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system, _ = v2_tree(tmp_path)

    def refuse(path: str, mode: int = 0o777) -> None:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr("pidns.runtime.cgroup.os.mkdir", refuse)
    with pytest.raises(LaunchFailed) as caught:
        create(Limits(memory=8 << 20), system=system, own=OWN_V2, janitor=False)
    message = str(caught.value)
    assert message.startswith("cannot create a cgroup: ") and "Permission denied" in message
    assert "delegate a cgroup v2 subtree" in message and "\n" not in message


def _only_the_scope_is_ours(
    monkeypatch: pytest.MonkeyPatch, app: Path, controllers: str = "cpuset cpu io memory pids"
) -> Path:
    """As systemd delegates a scope under a root-owned slice: the scope (the launcher's cgroup)
    is the user's, its parent is not (this test runs as root, who may write anything)."""
    scope = app / "leaf.scope"
    (scope / "cgroup.controllers").write_text(controllers + "\n")
    (scope / "cgroup.subtree_control").write_text("")
    (scope / "cgroup.procs").write_text("")
    real = cgroup._may_write
    monkeypatch.setattr(cgroup, "_may_write", lambda path: real(path) and path != str(app))
    return scope


def test_v2_delegated_scope_under_a_root_owned_slice_moves_the_launcher_to_a_leaf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system, app = v2_tree(tmp_path)
    scope = _only_the_scope_is_ours(monkeypatch, app)
    made = create(ALL, system=system, own=OWN_V2, name="pidns-t", janitor=False)
    d, leaf = scope / "pidns-t", scope / "pidns-t.launcher"
    assert [m.path for m in made.dirs] == [str(d)]
    assert (leaf / "cgroup.procs").read_text() == "0"  # this process moved itself in
    assert (scope / "cgroup.subtree_control").read_text() == "+cpu +cpuset +memory +pids"
    assert not (app / "cgroup.subtree_control").read_text()  # the slice is not touched
    assert (d / "memory.max").read_text() == str(64 << 20)
    assert made.leaf is not None and made.leaf.path == str(leaf)
    assert made.leaf.enabled == {"cpu", "cpuset", "memory", "pids"}

    monkeypatch.setattr(cgroup, "remove_dirs", _rmtree_all)
    made.remove()
    # the run's directory and the leaf gone, what was enabled disabled, the launcher back
    assert sorted(p.name for p in scope.iterdir() if p.is_dir()) == []
    assert (scope / "cgroup.subtree_control").read_text() == "-cpu -cpuset -memory -pids"
    assert (scope / "cgroup.procs").read_text() == "0"


def test_v2_leaf_leaves_controllers_enabled_before_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system, app = v2_tree(tmp_path)
    scope = _only_the_scope_is_ours(monkeypatch, app)
    (scope / "cgroup.subtree_control").write_text("pids\n")
    made = create(Limits(pids_max=5, memory=8 << 20), system=system, own=OWN_V2, janitor=False)
    assert made.leaf is not None and made.leaf.enabled == {"memory"}
    assert (scope / "cgroup.subtree_control").read_text() == "+memory"


def test_v2_leaf_in_a_scope_with_other_processes_says_so_and_undoes_the_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system, app = v2_tree(tmp_path)
    scope = _only_the_scope_is_ours(monkeypatch, app, "memory")
    real_write = cgroup._write

    def busy(path: str, text: str) -> None:
        if path.endswith("cgroup.subtree_control") and text.startswith("+"):
            raise OSError(16, "Device or resource busy", path)  # the kernel: tasks are in it
        real_write(path, text)

    monkeypatch.setattr(cgroup, "_write", busy)
    monkeypatch.setattr(cgroup, "remove_dirs", _rmtree_all)
    with pytest.raises(LaunchFailed) as caught:
        create(Limits(memory=8 << 20), system=system, own=OWN_V2, janitor=False)
    message = str(caught.value)
    assert f"{scope} holds other processes than pidns" in message and "\n" not in message
    assert "systemd-run --user --scope -p Delegate=yes" in message
    assert [p.name for p in scope.iterdir() if p.is_dir()] == []  # the leaf is gone
    assert (scope / "cgroup.procs").read_text() == "0"  # and the launcher back


def test_v2_neither_the_scope_nor_its_parent_ours_is_the_clear_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system, app = v2_tree(tmp_path)
    monkeypatch.setattr(cgroup, "_may_write", lambda path: False)

    def refuse(path: str, mode: int = 0o777) -> None:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr("pidns.runtime.cgroup.os.mkdir", refuse)
    with pytest.raises(LaunchFailed) as caught:
        create(Limits(memory=8 << 20), system=system, own=OWN_V2, janitor=False)
    message = str(caught.value)
    assert message.startswith(f"cannot create a cgroup: {app}/pidns-")  # beside, as before
    assert "Permission denied" in message and "delegate a cgroup v2 subtree" in message


def test_v2_accounting_only_without_limits(tmp_path: Path) -> None:
    """--virtualize alone: a directory, nothing enabled, nothing written."""
    system, app = v2_tree(tmp_path)
    made = create(Limits(), system=system, own=OWN_V2, name="pidns-t", janitor=False)
    assert (app / "cgroup.subtree_control").read_text() == ""
    assert list((app / "pidns-t").iterdir()) == []
    assert made.dirs[0].v2


def v1_tree(tmp: Path) -> System:
    for name in ("memory", "cpu,cpuacct", "cpuset", "pids"):
        (tmp / name / "a").mkdir(parents=True)
    (tmp / "cpuset" / "cpuset.effective_cpus").write_text("0-3\n")
    (tmp / "cpuset" / "cpuset.effective_mems").write_text("0\n")
    mounts = [
        Mount("/", str(tmp / "memory"), False, frozenset({"memory"})),
        Mount("/", str(tmp / "cpu,cpuacct"), False, frozenset({"cpu", "cpuacct"})),
        Mount("/", str(tmp / "cpuset"), False, frozenset({"cpuset"})),
        Mount("/", str(tmp / "pids"), False, frozenset({"pids"})),
        Mount("/", str(tmp / "unified"), True, frozenset()),  # hybrid: v2 without controllers
    ]
    (tmp / "unified").mkdir()
    return System.from_mounts(mounts)


OWN_V1 = b"4:memory:/a\n3:cpuset:/\n2:cpu,cpuacct:/\n1:pids:/a\n0::/\n"


def test_v1_one_directory_per_hierarchy_next_to_the_launchers(tmp_path: Path) -> None:
    system = v1_tree(tmp_path)
    made = create(ALL, system=system, own=OWN_V1, name="pidns-t", janitor=False)
    paths = made.paths()
    assert paths["memory"] == str(tmp_path / "memory" / "a" / "pidns-t")
    assert paths["cpu"] == paths["cpuacct"] == str(tmp_path / "cpu,cpuacct" / "pidns-t")
    assert paths["pids"] == str(tmp_path / "pids" / "a" / "pidns-t")
    assert paths["unified"] == str(tmp_path / "unified" / "pidns-t")  # its pressure files
    mem = Path(paths["memory"])
    assert (mem / "memory.limit_in_bytes").read_text() == str(64 << 20)
    cpu = Path(paths["cpu"])
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000"
    cs = Path(paths["cpuset"])
    assert (cs / "cpuset.cpus").read_text() == "0" and (cs / "cpuset.mems").read_text() == "0"
    assert (Path(paths["pids"]) / "pids.max").read_text() == "10"


def test_v1_memsw_is_memory_plus_swap_written_after_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = v1_tree(tmp_path)
    order: list[str] = []
    real_write = cgroup._write

    def record(path: str, text: str) -> None:
        order.append(Path(path).name)
        real_write(path, text)

    monkeypatch.setattr(cgroup, "_write", record)
    limits = Limits(memory=64 << 20, memory_swap=96 << 20)
    made = create(limits, system=system, own=OWN_V1, name="pidns-t", janitor=False)
    mem = Path(made.paths()["memory"])
    assert (mem / "memory.memsw.limit_in_bytes").read_text() == str(96 << 20)
    # the kernel refuses a memsw limit below the memory limit: memory first
    assert order.index("memory.limit_in_bytes") < order.index("memory.memsw.limit_in_bytes")


def test_v1_without_swap_accounting_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = v1_tree(tmp_path)
    real_write = cgroup._write

    def no_memsw(path: str, text: str) -> None:
        if "memsw" in path:  # cgroupfs: EACCES for a file it does not have
            raise PermissionError(13, "Permission denied", path)
        real_write(path, text)

    monkeypatch.setattr(cgroup, "_write", no_memsw)
    monkeypatch.setattr(cgroup, "remove_dirs", _rmtree_all)
    limits = Limits(memory=64 << 20, memory_swap=96 << 20)
    with pytest.raises(LaunchFailed, match=r"cannot limit swap: .* no memory\.memsw\.limit_in_"):
        create(limits, system=system, own=OWN_V1, janitor=False)
    assert list(tmp_path.glob("**/pidns-*")) == []


def test_v1_cpuset_without_a_limit_copies_the_parents(tmp_path: Path) -> None:
    system = v1_tree(tmp_path)
    made = create(Limits(memory=8 << 20), system=system, own=OWN_V1, janitor=False)
    cs = Path(made.paths()["cpuset"])
    assert (cs / "cpuset.cpus").read_text() == "0-3"  # an empty v1 cpuset admits no task
    assert not (Path(made.paths()["cpu"]) / "cpu.cfs_quota_us").exists()


def test_a_failure_removes_what_was_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = v1_tree(tmp_path)
    real_write = cgroup._write

    def fail_on_pids(path: str, text: str) -> None:
        if path.endswith("pids.max"):
            raise OSError(22, "Invalid argument", path)
        real_write(path, text)

    monkeypatch.setattr(cgroup, "_write", fail_on_pids)
    monkeypatch.setattr(cgroup, "remove_dirs", _rmtree_all)
    with pytest.raises(LaunchFailed, match="cannot set the limits"):
        create(ALL, system=system, own=OWN_V1, name="pidns-t", janitor=False)
    assert list(tmp_path.glob("**/pidns-t")) == []


def _rmtree_all(paths: list[str], timeout: float) -> list[str]:
    import shutil

    for path in paths:  # fixture directories hold regular files; a cgroup's rmdir takes them
        shutil.rmtree(path)
    return []


def test_sweep_removes_what_gone_launchers_left(tmp_path: Path) -> None:
    gone = 4194305  # above any pid_max: never a live pid
    old = time.time() - 3600
    left = tmp_path / f"pidns-{gone}-abcdef"
    recent = tmp_path / f"pidns-{gone}-123456"  # a launcher elsewhere may be filling it
    live = tmp_path / f"pidns-{os.getpid()}-abcdef"
    busy = tmp_path / f"pidns-{gone}-b00b00"  # rmdir refused (a cgroup with tasks: EBUSY)
    others = [tmp_path / "pidns-t", tmp_path / "leaf.scope", tmp_path / f"pidns-{gone}"]
    for d in (left, recent, live, busy, *others):
        d.mkdir()
    (busy / "cgroup.procs").write_text("42\n")
    for d in (left, live, busy, *others):
        os.utime(d, (old, old))
    assert cgroup.sweep(str(tmp_path)) == [str(left)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        d.name for d in (recent, live, busy, *others)
    )
    assert cgroup.sweep(str(tmp_path / "missing")) == []


def test_remove_dirs_innermost_first(tmp_path: Path) -> None:
    outer = tmp_path / "x"
    inner = outer / "y"
    inner.mkdir(parents=True)
    assert remove_dirs([str(outer), str(inner)], 0) == []
    assert not outer.exists()


@pytest.mark.parametrize(
    ("text", "size"),
    [("64M", 64 << 20), ("64m", 64 << 20), ("1g", 1 << 30), ("5120KiB", 5120 << 10),
     ("8388608", 8 << 20), ("1.5G", 3 << 29), ("64MB", 64 << 20)],
)  # fmt: skip
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"memory": "12Q"}, "--memory 12Q: not a size"),
        ({"memory": ""}, "not a size"),
        ({"memory": "nanM"}, "not a size"),
        ({"memory": "-1G"}, "not a size"),
        ({"memory": "3M"}, "too small"),
        ({"cpus": "0"}, "--cpus 0: not a positive"),
        ({"cpus": "inf"}, "not a positive"),
        ({"cpus": "0.001"}, "too small"),
        ({"cpuset": "a"}, "--cpuset a: not a CPU list"),
        ({"cpuset": "3-1"}, "not a CPU list"),
        ({"pids_max": "0"}, "--pids-max 0"),
        ({"pids_max": "1.5"}, "--pids-max 1.5"),
        ({"memory_swap": "96M"}, "--memory-swap 96M: needs --memory"),
        ({"memory": "64M", "memory_swap": "63M"}, "--memory-swap 63M: less than --memory"),
        ({"memory": "64M", "memory_swap": "x"}, "--memory-swap x: not a size"),
    ],
)
def test_bad_limits(kwargs: dict[str, str], named: str) -> None:
    with pytest.raises(UsageError, match=named.replace(".", r"\.")):
        parse_limits(**kwargs)  # type: ignore[arg-type]


def test_cpuset_outside_the_launchers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroup, "_available_cpus", lambda system: (0, 1))
    with pytest.raises(UsageError, match=r"CPU 2,5 is not available \(this cgroup may use 0-1\)"):
        parse_limits(cpuset="0,2,5", system=System.from_mounts([]))
    assert parse_limits(cpuset="1", system=System.from_mounts([])).cpuset == (1,)


def test_overlaid_files_are_the_virtualised_ones() -> None:
    assert set(overlaid_files()) == {"loadavg", *RESOURCE_FILES}


def test_btime_of_a_reader_in_a_time_namespace() -> None:
    offsets = b"monotonic      -2819         0\nboottime       -2819         0\n"
    assert boottime_offset(offsets) == -2819
    assert boottime_offset(b"") == 0
    stat = b"cpu  1 2 3\nbtime 1000\nprocesses 5\n"
    assert shift_btime(stat, -2819) == b"cpu  1 2 3\nbtime 3819\nprocesses 5\n"
    assert shift_btime(stat, 0) is stat
