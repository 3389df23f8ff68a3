"""The pure rules of a namespace's proc tree (rules.py, access.py's decisions), on synthetic data."""

from __future__ import annotations

import errno

from hypothesis import given
from hypothesis import strategies as s

from pidns.fuse.node import Requester
from pidns.view import access, rules
from pidns.view.options import Hidepid, ViewOptions
from pidns.view.rules import Creds


def creds(uid: int, dumpable: bool = True) -> Creds:
    return Creds((uid, uid, uid, uid), (uid, uid, uid, uid), dumpable)


def test_pid_names_are_read_as_the_kernel_reads_them() -> None:
    assert rules.pid_of_name("1") == 1 and rules.pid_of_name("4194304") == 4194304
    for name in ("0", "01", "+1", "4194305", "\u0661", "\u00b2", "1" * 30, "", "self"):
        assert rules.pid_of_name(name) is None, name
    assert rules.numeric("01") and not rules.numeric("self")


@given(s.lists(s.text("abc-_", min_size=1), unique=True), s.sets(s.integers(1, 10**6)))
def test_the_root_lists_fixed_names_then_self_then_pids_ascending(
    fixed: list[str], pids: set[int]
) -> None:
    entries = rules.root_listing(fixed, sorted(pids, reverse=True))
    names = [name for _cookie, name in entries]
    assert names == [*fixed, "self", "thread-self", *map(str, sorted(pids))]
    cookies = [cookie for cookie, _name in entries]
    assert cookies == sorted(set(cookies)) and all(0 < c < 2**31 for c in cookies)


def test_top_level_names_drop_pids_and_subset_pid_drops_all() -> None:
    host = ["1", "self", "thread-self", "meminfo", "sys"]
    assert rules.top_level_names(host, ViewOptions()) == ["meminfo", "sys"]
    assert rules.top_level_names(host, ViewOptions(subset_pid=True)) == []


def test_ptrace_read_needs_matching_ids_and_a_dumpable_task() -> None:
    me = Requester(10, 1000, 1000)
    assert rules.may_ptrace_read(me, creds(1000))
    assert not rules.may_ptrace_read(me, creds(1000, dumpable=False))
    assert not rules.may_ptrace_read(me, Creds((1000, 0, 1000, 1000), (1000,) * 4, True))
    assert rules.may_ptrace_read(Requester(10, 0, 0), creds(5, dumpable=False))


@given(
    s.sampled_from(list(Hidepid)),
    s.integers(0, 3),  # requester uid
    s.integers(0, 3),  # task uid
    s.booleans(),  # dumpable
    s.one_of(s.none(), s.integers(0, 3)),  # gid=
    s.integers(0, 3),  # requester gid
)
def test_hidepid_answers_as_the_kernel(
    hidepid: Hidepid, uid: int, owner: int, dumpable: bool, gid: int | None, rgid: int
) -> None:
    opts = ViewOptions(hidepid=hidepid, gid=gid)
    req = Requester(0, uid, rgid)
    task = creds(owner, dumpable)
    code = rules.pid_access(opts, req, task)
    may_read = uid == 0 or (uid == owner and rgid == owner and dumpable)
    exempt = gid is not None and rgid == gid
    if hidepid == Hidepid.OFF or may_read:
        assert code == 0
    elif hidepid == Hidepid.PTRACEABLE:
        assert code == errno.ENOENT
    elif exempt:
        assert code == 0
    else:
        assert code == (errno.ENOENT if hidepid == Hidepid.INVISIBLE else errno.EPERM)
    # access.visible hides exactly what pid_access calls ENOENT, and asks for creds only when
    # the options make them matter
    asked = []

    def lookup() -> Creds:
        asked.append(1)
        return task

    seen = access.visible(opts, Requester(0, uid, rgid, (rgid,)), lookup)
    assert seen == (rules.pid_access(opts, Requester(0, uid, rgid, (rgid,)), task) != errno.ENOENT)
    if hidepid in (Hidepid.OFF, Hidepid.NOACCESS) or uid == 0:
        assert not asked


def test_a_task_gone_before_its_creds_were_read_is_not_visible() -> None:
    opts = ViewOptions(hidepid=Hidepid.INVISIBLE)
    assert not access.visible(opts, Requester(0, 1000, 1000), lambda: None)


def test_only_the_mounting_user_and_root_enter_without_allow_other() -> None:
    opts = ViewOptions(owner_uid=1000)
    assert rules.admits(opts, Requester(1, 1000, 1)) and rules.admits(opts, Requester(1, 0, 0))
    assert not rules.admits(opts, Requester(1, 1001, 1))
    assert rules.admits(ViewOptions(allow_other=True, owner_uid=1000), Requester(1, 1001, 1))


def test_ptrace_guarded_entries() -> None:
    me = Requester(1, 1000, 1000)
    assert rules.task_entry_errno("environ", me, creds(1001)) == errno.EACCES
    assert rules.task_entry_errno("cwd", me, creds(1000)) == 0
    assert rules.task_entry_errno("status", me, creds(1001)) == 0


def test_self_links() -> None:
    assert rules.self_target(5) == "5" and rules.self_target(0) is None
    assert rules.thread_self_target(5, 6) == "5/task/6" and rules.thread_self_target(0, 6) is None


@given(
    s.sampled_from(list(Hidepid)),
    s.one_of(s.none(), s.integers(0, 2**31)),
    s.booleans(),
    s.booleans(),
    s.booleans(),
)
def test_view_options_survive_their_wire_form(
    hidepid: Hidepid, gid: int | None, subset: bool, other: bool, virtualize: bool
) -> None:
    opts = ViewOptions(hidepid, gid, subset, other, virtualize, owner_uid=7)
    assert ViewOptions.from_wire(opts.to_wire(), owner_uid=7) == opts
