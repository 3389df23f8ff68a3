"""The nodes of a view over a fixture proc tree: a directory laid out like /proc, a pid map and an
instance standing in for the kernel's translation (no namespace, mount or privilege needed).

The fixture's task is host pid 4820, numbered 5 in the view's namespace (level 1 below the host),
with its parent 4819 numbered 1 (the namespace's init)."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from pidns.fuse.node import Absent, Requester
from pidns.view import nodes
from pidns.view.instances import View
from pidns.view.options import Hidepid, ViewOptions

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Requester(100, 0, 0)
USER = Requester(100, 1000, 1000)
HOST_TO_NS = {4820: 5, 4819: 1}
HOST_LOADAVG = b"0.10 0.20 0.30 1/99 31337\n"


class PidMap:
    level = 1

    def to_ns(self, host: int) -> int:
        return HOST_TO_NS.get(host, 0)

    def tgid_to_ns(self, host: int) -> int:
        return HOST_TO_NS.get(host, 0)

    def to_host(self, pid: int) -> int:
        return next((h for h, n in HOST_TO_NS.items() if n == pid), 0)

    def leaders(self) -> list[tuple[int, int]]:
        return sorted((n, h) for h, n in HOST_TO_NS.items())

    def last_pid(self) -> int:
        return 5


class Instance:
    nsmap = PidMap()

    def counts(self) -> tuple[int, int]:
        return 1, 2

    def uptime(self, host: bytes) -> bytes:
        return b"12.00 34.00\n"

    def subject(self, options: object) -> None:
        return None  # no cgroup: resource files show the host's


class Registry:
    def __init__(self) -> None:
        self.generations: dict[int, int] = {}
        self.boottime_ns = 0  # the reader's clock ahead of the daemon's

    def reader_map(self, tid: int, instance: object) -> PidMap | None:
        return None  # the reader is in the daemon's namespace

    def reader_ids(self, tid: int) -> None:
        return None

    def reader_boottime_ns(self, tid: int) -> int:
        return self.boottime_ns


def _task(directory: Path, status: bytes, stat: bytes) -> None:
    directory.mkdir(parents=True)
    (directory / "status").write_bytes(status)
    (directory / "stat").write_bytes(stat)
    (directory / "environ").write_bytes(b"HOME=/root\0")
    (directory / "sched").write_bytes(b"sleep (4820, #threads: 1)\n---\n")
    (directory / "mem").write_bytes(b"")


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[View, Path]]:
    status = (FIXTURES / "nested_status.bin").read_bytes()
    stat = (FIXTURES / "nested_stat.bin").read_bytes()
    _task(tmp_path / "4820", status, stat)
    _task(tmp_path / "4820" / "task" / "4820", status, stat)
    (tmp_path / "4820" / "task" / "4820" / "children").write_bytes(b"4821 ")
    (tmp_path / "loadavg").write_bytes(HOST_LOADAVG)
    (tmp_path / "uptime").write_bytes(b"1000.00 2000.00\n")
    (tmp_path / "meminfo").write_bytes(b"MemTotal: 1 kB\n")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    view = View("v1", cast(Any, Instance()), ViewOptions(), cast(Any, Registry()), "", fd)
    try:
        yield view, tmp_path
    finally:
        os.close(fd)


def _with(view: View, **options: Any) -> View:
    return View(view.id, view.instance, ViewOptions(**options), view.registry, "", view.proc_fd)


def test_pid_directories_are_found_by_their_number_in_the_namespace(
    tree: tuple[View, Path],
) -> None:
    view, _ = tree
    root = nodes.Root(view)
    task = root.lookup("5", ROOT)
    assert isinstance(task, nodes.PidDir) and (task.ns_pid, task.host_pid) == (5, 4820)
    assert task.owner == 4820 and root.owner is None
    for name in ("4820", "01", "7", "99999999999"):  # host numbers and non-pids find nothing
        with pytest.raises(OSError) as err:
            root.lookup(name, ROOT)
        assert err.value.errno == errno.ENOENT
    task.release()


def test_status_and_stat_are_rendered_in_the_namespace_s_numbers(tree: tuple[View, Path]) -> None:
    view, _ = tree
    task = nodes.Root(view).lookup("5", ROOT)
    status = task.lookup("status", ROOT).content(ROOT).decode()
    assert "\nPid:\t5\n" in status and "\nPPid:\t1\n" in status and "\nNSpid:\t5\t2\n" in status
    stat = task.lookup("stat", ROOT).content(ROOT).split()
    assert stat[0] == b"5" and stat[3] == b"1"
    assert task.lookup("sched", ROOT).content(ROOT).startswith(b"sleep (5, #threads")
    task.release()


def test_a_reader_in_a_time_namespace_gets_its_clock(tree: tuple[View, Path]) -> None:
    """§14b: start time and uptime in the reader's CLOCK_BOOTTIME (500 s behind the daemon's)."""
    view, _ = tree
    task = nodes.Root(view).lookup("5", ROOT)
    host_start = int(task.lookup("stat", ROOT).content(ROOT).split()[21])
    cast(Any, view.registry).boottime_ns = -500 * 1_000_000_000
    try:
        stat = task.lookup("stat", ROOT).content(ROOT).split()
        assert int(stat[21]) == host_start - 500 * os.sysconf("SC_CLK_TCK")
        assert nodes.Root(view).lookup("uptime", ROOT).content(ROOT) == b"500.00 2000.00\n"
        virtual = nodes.Root(_with(view, virtualize=True))
        assert virtual.lookup("uptime", ROOT).content(ROOT) == b"500.00 2000.00\n"
    finally:
        cast(Any, view.registry).boottime_ns = 0
        task.release()


def test_children_exists_only_under_task(tree: tuple[View, Path]) -> None:
    view, _ = tree
    task = nodes.Root(view).lookup("5", ROOT)
    with pytest.raises(Absent):
        task.lookup("children", ROOT)  # an absence the kernel may cache
    thread = task.lookup("task", ROOT).lookup("5", ROOT)
    assert thread.lookup("children", ROOT).content(ROOT) == b""  # 4821 has no number here
    task.release()
    thread.release()


def test_passed_through_files_keep_the_kernel_s_guards(tree: tuple[View, Path]) -> None:
    view, _ = tree
    task = nodes.Root(view).lookup("5", ROOT)
    assert task.lookup("environ", ROOT).content(ROOT) == b"HOME=/root\0"
    with pytest.raises(OSError) as err:
        task.lookup("environ", USER).content(USER)  # root's task: ptrace-read refused
    assert err.value.errno == errno.EACCES
    with pytest.raises(OSError) as err:
        task.lookup("mem", ROOT).content(ROOT)  # read by offset: never snapshotted
    assert err.value.errno == errno.EPERM
    with pytest.raises(Absent):
        task.lookup("nonexistent", ROOT)
    task.release()


def test_hidepid_closes_or_hides_other_users_tasks(tree: tuple[View, Path]) -> None:
    view, _ = tree
    closed = nodes.Root(_with(view, hidepid=Hidepid.NOACCESS)).lookup("5", USER)
    with pytest.raises(OSError) as err:
        closed.check_open_dir(USER)
    assert err.value.errno == errno.EPERM
    closed.release()
    hidden = nodes.Root(_with(view, hidepid=Hidepid.INVISIBLE))
    with pytest.raises(OSError) as err:
        hidden.lookup("5", USER)
    assert err.value.errno == errno.ENOENT
    assert "5" not in [name for _c, name, _n in hidden.listing(USER)]


def test_a_task_gone_is_esrch_and_a_retired_one_never_reaches_the_host(
    tree: tuple[View, Path],
) -> None:
    view, path = tree
    root = nodes.Root(view)
    task = root.lookup("5", ROOT)
    assert isinstance(task, nodes.PidDir)
    status = task.lookup("status", ROOT)
    shutil.rmtree(path / "4820")
    assert task.reaped()  # its pinned directory answers nothing, as a reaped task's
    with pytest.raises(OSError) as err:
        status.content(ROOT)  # read through the pinned fd
    assert err.value.errno == errno.ESRCH
    task.release()
    with pytest.raises(OSError) as err:
        status.content(ROOT)  # released: its directory can't be reopened either
    assert err.value.errno == errno.ESRCH
    retired = root.lookup_unchecked("5", ROOT)
    assert isinstance(retired, nodes.PidDir)
    retired.retire()
    with pytest.raises(OSError) as err:
        retired.read("status")
    assert err.value.errno == errno.ESRCH


def test_top_level_files_follow_the_table(tree: tuple[View, Path]) -> None:
    view, _ = tree
    root = nodes.Root(view)
    loadavg = root.lookup("loadavg", ROOT)
    assert isinstance(loadavg, nodes.Special)
    assert loadavg.content(ROOT) == HOST_LOADAVG  # the reader's namespace is the daemon's
    # without virtualize, uptime is the host's moved by the reader's time namespace (§14b)
    uptime = root.lookup("uptime", ROOT)
    assert isinstance(uptime, nodes.Special)
    assert isinstance(root.lookup("meminfo", ROOT), nodes.Pass)  # only rendered with virtualize
    virtual = nodes.Root(_with(view, virtualize=True))
    assert virtual.lookup("uptime", ROOT).content(ROOT) == b"12.00 34.00\n"
    assert virtual.lookup("loadavg", ROOT).content(ROOT).split()[3] == b"1/2"
    assert root.lookup("meminfo", ROOT).content(ROOT) == b"MemTotal: 1 kB\n"
    with pytest.raises(OSError) as err:
        nodes.Root(_with(view, subset_pid=True)).lookup("meminfo", ROOT)
    assert err.value.errno == errno.ENOENT


def test_the_root_lists_fixed_names_self_then_pids(tree: tuple[View, Path]) -> None:
    view, _ = tree
    names = [name for _c, name, _n in nodes.Root(view).listing(ROOT)]
    assert names[-4:] == ["self", "thread-self", "1", "5"] or names[-3:] == [
        "self",
        "thread-self",
        "5",
    ]
    assert names.index("self") < names.index("5")


def test_the_sysfs_files_hide_under_a_name_the_root_never_lists(tree: tuple[View, Path]) -> None:
    view, _ = tree
    hidden = ".pidns-sys-0123456789abcdef"
    virtual = View(
        view.id,
        view.instance,
        ViewOptions(virtualize=True),
        view.registry,
        "",
        view.proc_fd,
        sys_name=hidden,
    )
    root = nodes.Root(virtual)
    listed = [name for _c, name, _n in root.listing(ROOT)]
    assert hidden not in listed
    plain = nodes.Root(_with(view, virtualize=True))  # the same view without the name
    assert listed == [name for _c, name, _n in plain.listing(ROOT)]
    for other, name in ((root, hidden[:-1] + "0"), (plain, hidden)):
        with pytest.raises(OSError) as err:  # any other name, or another view: the host's
            other.lookup(name, ROOT)
        assert err.value.errno == errno.ENOENT
    node = root.lookup(hidden, ROOT)
    for name in ("devices", "system", "cpu"):
        assert isinstance(node, nodes.SysDir)
        assert [n for _c, n, _node in node.listing(ROOT)] == [name]
        with pytest.raises(Absent):
            node.lookup("kernel", ROOT)
        node = node.lookup(name, ROOT)
    assert [n for _c, n, _node in node.listing(ROOT)] == ["online"]
    online = node.lookup("online", ROOT)
    assert isinstance(online, nodes.SysFile)
    # the fixture's instance has no cgroup (subject None): the host's file
    assert online.content(ROOT) == Path("/sys/devices/system/cpu/online").read_bytes()
