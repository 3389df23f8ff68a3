"""`pidns exec`: a command inside an existing namespace, with that namespace's /proc."""

from __future__ import annotations

import click

from pidns.cli.options import backend_option, proc_option


@click.command(
    "exec",
    context_settings={"allow_interspersed_args": False},
    epilog="Exit status: the command's; 128+N when signal N killed it; 125 when joining failed; "
    "126 when it is not executable; 127 when it is not found.",
)
@click.option("--ns", "designator", required=True, metavar="NS", help="The namespace to enter.")
@backend_option(
    "/proc inside: a procfs mounted from within NS (kernel; auto picks it: it works "
    "wherever joining does), or pidns's own FUSE view of NS (fuse).",
)
@proc_option
@click.option(
    "--virtualize",
    is_flag=True,
    help="/proc's resource files (meminfo, cpuinfo, stat, uptime, loadavg, swaps, diskstats, "
    "pressure/*) and /sys/devices/system/cpu/online show NS's cgroup, so free, top, "
    "os.cpu_count() and readers of /proc see its limits.",
)
@click.option(
    "--cpus-from-quota",
    is_flag=True,
    help="With --virtualize: as many CPUs as NS's CPU quota lets run at once.",
)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, metavar="-- CMD [ARGS]...")
def command(
    designator: str,
    backend: str,
    proc: str,
    virtualize: bool,
    cpus_from_quota: bool,
    argv: tuple[str, ...],
) -> int:
    """Run CMD inside namespace NS (setns + fork), in a private mount namespace where /proc is
    NS's own proc tree: ps, top, pstree or a psutil script inside show NS as NS sees itself.
    CMD also joins the time namespace of NS's init when it has its own (pidns run --virtualize).
    """
    if not argv:
        raise click.UsageError("no command given: pidns exec --ns NS -- CMD [ARGS]...")
    from pidns.runtime.execute import exec_in

    return exec_in(designator, argv, proc, backend, virtualize, cpus_from_quota)
