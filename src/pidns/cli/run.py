"""`pidns run`: a command in new nested PID namespaces, each born with its own /proc."""

from __future__ import annotations

from typing import Any

import click

from pidns.cli.options import backend_option


@click.command(
    "run",
    context_settings={"allow_interspersed_args": False},
    epilog="Exit status: the command's; 128+N when signal N killed it; 125 when pidns failed "
    "before the command started; 126 when it is not executable; 127 when it is not found.",
)
@click.option(
    "--nest",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="Nested levels to create; the command runs in the innermost.",
)
@click.option(
    "--user/--no-user",
    default=None,
    help="Force / forbid a user namespace mapping you to root (default: only when not root).",
)
@click.option("--no-init", is_flag=True, help="Make the command itself pid 1 (no reaping).")
@click.option(
    "--forward-to",
    type=click.Choice(["child", "group"]),
    default="child",
    show_default=True,
    help="Forward signals to the command, or to its whole process group.",
)
@click.option(
    "--kill-timeout",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="After the command exits: how long the rest gets after SIGTERM before SIGKILL.",
)
@click.option(
    "--die-with-parent/--no-die-with-parent",
    default=True,
    show_default=True,
    help="Kill the namespace when this pidns process dies.",
)
@click.option("--name", metavar="NAME", help="Register the namespace so --ns NAME finds it.")
@click.option(
    "--status-json",
    metavar="FILE|-",
    help="Write a JSON line when the command starts and one when it ends.",
)
@click.option(
    "--view",
    metavar="DIR",
    help="Mount the namespace's proc tree at DIR (made if missing) before CMD starts; "
    "unmounted after (see 'pidns mount').",
)
@backend_option("Backend of --view: the kernel's procfs or pidns's FUSE view.", "--view-backend")
@click.option(
    "--memory",
    metavar="SIZE",
    help="Memory limit of a cgroup made for the namespaces (bytes, or K/M/G/T: 64M).",
)
@click.option(
    "--memory-swap",
    metavar="SIZE",
    help="Memory plus swap limit (needs --memory, at least it; equal: no swap). "
    "Without it, swap is not limited.",
)
@click.option(
    "--cpus",
    metavar="N",
    help="CPU time limit, in CPUs (CFS quota/period: 0.5 is half a CPU).",
)
@click.option("--cpuset", metavar="LIST", help="The CPUs the namespaces may run on (0-1, 0,2).")
@click.option("--pids-max", metavar="N", help="Most tasks at once in the namespaces (inits count).")
@click.option(
    "--virtualize",
    is_flag=True,
    help="The command's /proc shows its cgroup (meminfo, cpuinfo, stat, uptime, loadavg, swaps, "
    "diskstats, pressure/*), and so does /sys/devices/system/cpu/online (os.cpu_count, "
    "get_nprocs); a time namespace makes uptime, sysinfo and CLOCK_BOOTTIME count from the "
    "namespace's birth. Makes a cgroup even without limits.",
)
@click.option(
    "--cpus-from-quota",
    is_flag=True,
    help="With --virtualize: cpuinfo, stat and cpu/online show as many CPUs as the --cpus "
    "quota lets run at once (rounded up, at most the cpuset's).",
)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, metavar="-- CMD [ARGS]...")
def command(**options: Any) -> int:
    """Run CMD in NEST new nested PID namespaces, each with a fresh /proc mounted before
    anything runs in it, under a small init that reaps orphans and forwards signals.

    When not root, a user namespace maps you to root in them (rootless).
    """
    if not options["argv"]:
        raise click.UsageError("no command given: pidns run [OPTIONS] -- CMD [ARGS]...")
    from pidns.cli.run_fast import execute

    return execute(**options)
