"""`pidns translate`: a pid from one namespace's numbering to another's, or a stream of them."""

from __future__ import annotations

import re
import sys
import time

import click

from pidns.cli.options import json_option, namespace_for, proc_option, runtime_cli_option
from pidns.cli.output import emit_json
from pidns.errors import UsageError
from pidns.model import PidNamespace, Snapshot

_FIELD = re.compile(r"\S+")
REFRESH = 1.0  # seconds: a pid unknown to the snapshot re-reads /proc at most this often


@click.command("translate")
@click.argument("pid", metavar="PID|-")
@click.option(
    "--from", "src", metavar="NS", help="The namespace PID is numbered in (default: yours)."
)
@click.option("--to", "dst", metavar="NS", required=True, help="The namespace to number it in.")
@click.option(
    "--field",
    type=click.IntRange(min=1),
    metavar="N",
    help="With '-': the pid is the Nth whitespace-separated field of each line (default: the "
    "whole line).",
)
@runtime_cli_option
@json_option
@proc_option
def command(
    pid: str, src: str | None, dst: str, field: int | None, as_json: bool, proc: str
) -> None:
    """Print the number namespace --to gives the task that --from numbers PID.

    Uses the kernel's NS_GET_PID_*_PIDNS ioctls where the namespace files can be opened,
    the NSpid chains otherwise. A pid with no number in --to is an error (exit 1).

    With '-' instead of PID, read pids from stdin (one per line, or field N of each line with
    --field) and write each line back with the pid rewritten in --to's numbers, '-' where --to
    cannot see it; lines whose field is not a number pass unchanged (headers).
    """
    from pidns.procfs.snapshot import snapshot
    from pidns.translate import translate

    if pid == "-":
        if as_json:
            raise UsageError("--json does not apply to the stdin filter ('-')")
        return filter_lines(proc, src, dst, field)
    if field is not None:
        raise click.UsageError("--field applies only to the stdin filter ('-')")
    if not pid.isdigit() or int(pid) < 1:
        raise click.BadParameter(f"{pid!r} is not a pid (a number >= 1, or '-')", param_hint="PID")
    snap = snapshot(proc)
    src_ns = namespace_for(snap, src)
    dst_ns = namespace_for(snap, dst)
    result = translate(snap, int(pid), src_ns, dst_ns)
    if as_json:
        emit_json({"pid": int(pid), "from": src_ns.id.ino, "to": dst_ns.id.ino, "result": result})
    else:
        click.echo(result)


class Table:
    """src's number -> dst's number for every task, re-read when a pid is not in it (a task
    started since), at most once per REFRESH seconds."""

    def __init__(self, proc: str, src: str | None, dst: str) -> None:
        self.proc, self.src, self.dst = proc, src, dst
        self.read_at = 0.0
        self.numbers: dict[int, int | None] = {}
        self.refresh()

    def refresh(self) -> None:
        from pidns.procfs.snapshot import snapshot

        snap = snapshot(self.proc, threads=True)
        src_ns = namespace_for(snap, self.src)
        dst_ns = namespace_for(snap, self.dst)
        self.numbers = _numbers(snap, src_ns, dst_ns)
        self.read_at = time.monotonic()

    def get(self, pid: int) -> int | None:
        if pid not in self.numbers and time.monotonic() - self.read_at >= REFRESH:
            self.refresh()
        return self.numbers.get(pid)


def _numbers(snap: Snapshot, src: PidNamespace, dst: PidNamespace) -> dict[int, int | None]:
    members = snap.subtree(src)
    found: dict[int, int | None] = {}
    for task in snap.all_tasks(threads=True):
        if task.ns_ino in members and len(task.nspid) > src.level:
            found[task.nspid[src.level]] = snap.pid_in(task, dst)
    return found


def filter_lines(proc: str, src: str | None, dst: str, field: int | None) -> None:
    table = Table(proc, src, dst)
    out = sys.stdout
    for line in sys.stdin:
        body = line.rstrip("\n")
        ending = line[len(body) :]
        if field is None:
            spans = [m.span() for m in _FIELD.finditer(body)]
            span = spans[0] if len(spans) == 1 else None
        else:
            spans = [m.span() for m in _FIELD.finditer(body)]
            span = spans[field - 1] if len(spans) >= field else None
        if span is not None and body[span[0] : span[1]].isdigit():
            number = table.get(int(body[span[0] : span[1]]))
            text = "-" if number is None else str(number)
            body = body[: span[0]] + text + body[span[1] :]
        out.write(body + ending)
        out.flush()
