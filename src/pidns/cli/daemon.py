"""`pidns daemon status`, `pidns daemon restart`: the user's view daemon."""

from __future__ import annotations

import time

import click

from pidns.cli.options import json_option


@click.group("daemon", invoke_without_command=True)
@click.pass_context
def command(ctx: click.Context) -> None:
    """The view daemon that serves this user's FUSE views."""
    if ctx.invoked_subcommand is None:
        raise click.UsageError("pidns daemon needs a command: status or restart")


def _when(started: object) -> str:
    if not isinstance(started, (int, float)):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))


@command.command("status")
@json_option
def status_command(as_json: bool) -> None:
    """Show the daemon: pid, start time, generation, views, the holder of their fds and the
    spare daemon it keeps loaded to take over at once should this one die."""
    from pidns.errors import PidnsError
    from pidns.view.api import daemon_status

    status = daemon_status()
    if as_json:
        from pidns.cli.output import emit_json

        emit_json(status or {"running": False})
        return
    if status is None:
        raise PidnsError("no view daemon runs")
    views = status.get("views") or []
    survive = status.get("survive") or {}
    click.echo(
        f"daemon {status['pid']} started {_when(status.get('started'))}"
        f" generation {status.get('generation')} views {len(views)}"
        f" holder {status.get('holder') or '-'} spare {status.get('spare') or '-'}"
    )
    for v in views:
        kept = "survives a crash" if survive.get(v["view"]) else "survives a restart only"
        click.echo(f"  {v['view']} {v['mountpoint'] or '-'} pid:[{v['ns']}] ({kept})")


@command.command("restart")
def restart_command() -> None:
    """Replace the daemon by one running the code installed now; it takes over every view."""
    from pidns.view.api import restart_daemon

    old, new = restart_daemon()
    click.echo(
        f"daemon {old['pid']} -> {new['pid']} (generation {new.get('generation')},"
        f" {len(new.get('views') or [])} views)"
    )
