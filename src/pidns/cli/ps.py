"""`pidns ps`: the tasks a namespace sees, numbered as it sees them (the click command;
what it prints is ps_show.py's)."""

from __future__ import annotations

import click

from pidns.cli.options import (
    json_option,
    no_containers_option,
    proc_option,
    runtime_cli_option,
)
from pidns.cli.ps_show import (
    COLUMNS,
    CONTAINER_COLUMNS,
    DEFAULT_COLUMNS,
    record,
    records_json,
    show,
)

__all__ = ["command", "record", "records_json"]


def parse_columns(spec: str) -> list[str]:
    names = [c.strip().lower() for c in spec.split(",") if c.strip()]
    unknown = [c for c in names if c not in COLUMNS and c not in CONTAINER_COLUMNS]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown column {', '.join(unknown) or '(none)'}; choose from {', '.join([*COLUMNS, *CONTAINER_COLUMNS])}",
            param_hint="-o",
        )
    return names


@click.command("ps")
@click.option(
    "--ns", "designator", metavar="NS", help="The namespace to view from (default: yours)."
)
@click.option("--tree", is_flag=True, help="Draw parent/child, marking namespace boundaries.")
@click.option("-T", "--threads", is_flag=True, help="Show every thread, not only group leaders.")
@click.option(
    "-o",
    "columns",
    default=DEFAULT_COLUMNS,
    show_default=True,
    help=f"Columns to show, of: {', '.join([*COLUMNS, *CONTAINER_COLUMNS])}.",
)
@click.option(
    "--container",
    "container_filter",
    metavar="NAME",
    help="Only tasks of this container (its name, an id prefix, RUNTIME:NAME or its pod's name).",
)
@no_containers_option
@runtime_cli_option
@json_option
@proc_option
def command(
    designator: str | None,
    tree: bool,
    threads: bool,
    columns: str,
    container_filter: str | None,
    no_containers: bool,
    as_json: bool,
    proc: str,
) -> None:
    """List the tasks visible in NS, numbered as NS sees them.

    PID/PPID are NS's numbers (PPID 0: the parent is outside NS); NSPID is the pid chain from NS
    down to the task's own namespace; HOSTPID is the number in the proc tree's own namespace.
    CONTAINER, POD and RUNTIME (-o) name the container of the task's PID namespace.
    """
    cols = parse_columns(columns)
    if no_containers and (container_filter or any(c in CONTAINER_COLUMNS for c in cols)):
        raise click.UsageError("--no-containers leaves no container to show or filter by")
    show(designator, tree, threads, cols, container_filter, no_containers, as_json, proc)
