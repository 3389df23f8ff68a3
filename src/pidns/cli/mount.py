"""`pidns mount`, `pidns umount`, `pidns mounts`: serve a namespace's proc tree at a directory.

A FUSE view is mounted by this process (mount(2) as root, fusermount3 otherwise) and served by the
user's view daemon, which is started when none runs. Imports stay lazy: the view machinery loads only
when one of these commands runs.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import TYPE_CHECKING

import click

from pidns.cli.options import backend_option, json_option

if TYPE_CHECKING:
    from pidns.view.api import ViewHandle


@click.command("mount")
@click.argument("ns")
# Plain strings: click's Path would stat the directory, and a view whose daemon died answers
# ENOTCONN there; open_view and close_view check (and recover) it themselves.
@click.argument("mountpoint")
@backend_option(
    "kernel: a procfs owned by NS (needs root); fuse: pidns's own view (any user); "
    "auto: kernel when permitted.",
)
@click.option(
    "--hidepid",
    type=click.Choice(["off", "noaccess", "invisible", "ptraceable"]),
    default="off",
    show_default=True,
    help="Hide other users' tasks, as procfs's hidepid=.",
)
@click.option(
    "--gid",
    type=int,
    default=None,
    metavar="G",
    help="Members of group G see every task (hidepid).",
)
@click.option(
    "--subset",
    type=click.Choice(["pid"]),
    default=None,
    help="Only pid directories, self and thread-self.",
)
@click.option(
    "--allow-other",
    is_flag=True,
    help="Let other users enter the view (each checked like procfs would; unprivileged users "
    "need user_allow_other in /etc/fuse.conf).",
)
@click.option(
    "--virtualize",
    is_flag=True,
    help="Show NS's own resources (LXCFS-style), from the cgroup of its init: meminfo, cpuinfo, "
    "stat, uptime, loadavg, swaps, diskstats, pressure/*. With --backend kernel, only those files "
    "are pidns's, bound over the kernel's procfs.",
)
@click.option(
    "--cpus-from-quota",
    is_flag=True,
    help="With --virtualize: show as many CPUs as NS's CPU quota lets run at once "
    "(ceil(quota/period), at most its cpuset), numbered from 0.",
)
@click.option("--foreground", is_flag=True, help="Stay attached until interrupted, then unmount.")
def mount_command(
    ns: str,
    mountpoint: str,
    backend: str,
    hidepid: str,
    gid: int | None,
    subset: str | None,
    allow_other: bool,
    virtualize: bool,
    cpus_from_quota: bool,
    foreground: bool,
) -> None:
    """Serve the proc tree of namespace NS at MOUNTPOINT."""
    from pidns.view.api import open_view

    handle = open_view(
        ns,
        mountpoint,
        backend=backend,
        hidepid=hidepid,
        gid=gid,
        subset_pid=subset == "pid",
        allow_other=allow_other,
        virtualize=virtualize,
        cpus_from_quota=cpus_from_quota,
    )
    click.echo(
        f"{handle.mountpoint}: pid:[{handle.ns}] ({handle.backend}"
        + (f", daemon {handle.daemon_pid}" if handle.daemon_pid else "")
        + ")"
    )
    if foreground:
        stay_attached(handle)


def stay_attached(handle: ViewHandle) -> None:
    """--foreground: wait until interrupted (or unmounted from elsewhere), then unmount."""
    from pidns.view.mountsys import is_mountpoint

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop and is_mountpoint(handle.mountpoint):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    if is_mountpoint(handle.mountpoint):
        handle.close()
    sys.stderr.write(f"{handle.mountpoint}: unmounted\n")


@click.command("umount")
@click.argument("mountpoint")
def umount_command(mountpoint: str) -> None:
    """Unmount a view made by 'pidns mount'."""
    from pidns.view.api import close_view

    close_view(mountpoint)


@click.command("mounts")
@json_option
def mounts_command(as_json: bool) -> None:
    """List the views made by 'pidns mount', with their state (alive, ns-dead, disconnected)."""
    from pidns.view.api import list_views

    views = list_views()
    if as_json:
        from pidns.cli.output import emit_json

        emit_json(views)
        return
    from pidns.cli.output import print_columns
    from pidns.view.options import ViewOptions

    rows = []
    for v in views:
        words = ViewOptions.from_wire(v.get("options") or {}).words()
        rows.append(
            [
                str(v["mountpoint"]),
                f"pid:[{v['ns']}]" if v.get("ns") else "-",
                str(v["backend"]),
                str(v.get("daemon_pid") or "-"),
                ",".join(words) or "-",
                str(v.get("state", "-")),
            ]
        )
    print_columns(
        ["MOUNTPOINT", "NAMESPACE", "BACKEND", "DAEMON", "OPTIONS", "STATE"],
        rows,
        left={"MOUNTPOINT", "NAMESPACE", "BACKEND", "OPTIONS", "STATE"},
    )
