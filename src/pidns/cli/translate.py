"""`pidns translate`: a pid from one namespace's numbering to another's."""

from __future__ import annotations

import click

from pidns.cli.options import json_option, namespace_for, proc_option
from pidns.cli.output import emit_json


@click.command("translate")
@click.argument("pid", type=click.IntRange(min=1))
@click.option(
    "--from", "src", metavar="NS", help="The namespace PID is numbered in (default: yours)."
)
@click.option("--to", "dst", metavar="NS", required=True, help="The namespace to number it in.")
@json_option
@proc_option
def command(pid: int, src: str | None, dst: str, as_json: bool, proc: str) -> None:
    """Print the number namespace --to gives the task that --from numbers PID.

    Uses the kernel's NS_GET_PID_*_PIDNS ioctls where the namespace files can be opened,
    the NSpid chains otherwise. A pid with no number in --to is an error (exit 1).
    """
    from pidns.procfs.snapshot import snapshot
    from pidns.translate import translate

    snap = snapshot(proc)
    src_ns = namespace_for(snap, src)
    dst_ns = namespace_for(snap, dst)
    result = translate(snap, pid, src_ns, dst_ns)
    if as_json:
        emit_json({"pid": pid, "from": src_ns.id.ino, "to": dst_ns.id.ino, "result": result})
    else:
        click.echo(result)
