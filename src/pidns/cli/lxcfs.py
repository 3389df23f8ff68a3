"""`pidns lxcfs`: an LXCFS-compatible tree, each reader seeing its own cgroup's values."""

from __future__ import annotations

import click


@click.command(
    "lxcfs",
    epilog="Bind its files into containers as with LXCFS, e.g. podman run "
    "-v DIR/proc/meminfo:/proc/meminfo:ro -v DIR/proc/cpuinfo:/proc/cpuinfo:ro …",
)
@click.argument("mountpoint")
@click.option(
    "--cpus-from-quota",
    is_flag=True,
    help="Show as many CPUs as the reader's CPU quota lets run at once (ceil(quota/period), "
    "at most its cpuset), numbered from 0 (LXCFS's --enable-cfs count).",
)
@click.option("--foreground", is_flag=True, help="Stay attached until interrupted, then unmount.")
def command(mountpoint: str, cpus_from_quota: bool, foreground: bool) -> None:
    """Serve proc/{meminfo,cpuinfo,stat,uptime,loadavg,swaps,diskstats} and
    sys/devices/system/cpu/online at MOUNTPOINT, where every reader sees its own resources:
    the cgroup of its PID namespace's init (its own cgroup on the host), as LXCFS decides.
    Readable by every user and from every container; 'pidns umount MOUNTPOINT' removes it.
    """
    from pidns.cli.mount import stay_attached
    from pidns.view.api import open_lxcfs

    handle = open_lxcfs(mountpoint, cpus_from_quota)
    click.echo(f"{handle.mountpoint}: lxcfs (daemon {handle.daemon_pid})")
    if foreground:
        stay_attached(handle)
