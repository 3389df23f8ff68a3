"""Options several commands share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from pidns.cli.ps_show import namespace_for, own_namespace

__all__ = ["namespace_for", "own_namespace"]

F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
proc_option = click.option(
    "--proc",
    default="/proc",
    show_default=True,
    metavar="DIR",
    help="The proc tree to read (any procfs mount; its namespace is level 0).",
)


def backend_option(help: str, name: str = "--backend") -> Callable[[F], F]:
    """The option choosing what serves a view (pidns.view.options.BACKENDS)."""
    from pidns.view.options import BACKENDS

    return click.option(
        name, type=click.Choice(BACKENDS), default="auto", show_default=True, help=help
    )


def _runtime_cli(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        from pidns.containers import use_runtime_cli

        use_runtime_cli(True)


runtime_cli_option = click.option(
    "--runtime-cli",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_runtime_cli,
    help="Let container designators ask the runtime's CLI (docker, podman, nerdctl, crictl "
    "inspect) when cgroups and state files cannot answer (also: PIDNS_RUNTIME_CLI=1).",
)
no_containers_option = click.option(
    "--no-containers",
    is_flag=True,
    help="Do not name namespaces after their containers (no cgroup or state file is read).",
)
