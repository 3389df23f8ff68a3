"""`pidns which PID...`: every namespace and container a host pid belongs to, level by level."""

from __future__ import annotations

from typing import Any

import click

from pidns.cli.options import json_option, no_containers_option, proc_option
from pidns.cli.output import emit_json, warn
from pidns.errors import ProcessGone
from pidns.ids import HostPid
from pidns.listing import command_line


@click.command("which")
@click.argument("pids", nargs=-1, required=True, type=click.IntRange(min=1), metavar="PID...")
@no_containers_option
@json_option
@proc_option
def command(pids: tuple[int, ...], no_containers: bool, as_json: bool, proc: str) -> None:
    """For each PID (as --proc's namespace numbers it), the chain of PID namespaces from the
    top down to the task's own, with the task's number and the container at every level."""
    from pidns.procfs.snapshot import snapshot

    snap = snapshot(proc, threads=True)
    by_pid = {t.host_pid: t for t in snap.all_tasks(threads=True)}
    missing = [p for p in pids if HostPid(p) not in by_pid]
    if missing:
        raise ProcessGone(
            f"no process with pid {', '.join(map(str, missing))} in {proc} (it may have exited)"
        )
    containers = {}
    if not no_containers:
        from pidns.containers import label

        labels = label(snap)
        containers = labels.by_ns
        for problem in labels.problems:
            warn(f"could not read: {problem}")
    results: list[dict[str, Any]] = []
    for pid in pids:
        task = by_pid[HostPid(pid)]
        home = snap.ns_of(task)
        levels = []
        for level in range(task.level + 1):
            ns = snap.ancestor_at(home, level) if home is not None else None
            container = containers.get(ns.ino) if ns is not None else None
            levels.append(
                {
                    "level": level,
                    "ns": ns.ino if ns is not None else None,
                    "pid": task.nspid[level],
                    "container": container.to_json() if container is not None else None,
                }
            )
        results.append(
            {
                "host_pid": pid,
                "command": command_line(task.cmdline, task.comm),
                "levels": levels,
            }
        )
    if as_json:
        emit_json(results)
        return
    from pidns.containers import Container

    for result in results:
        click.echo(f"{result['host_pid']}  {result['command']}")
        for lv in result["levels"]:
            shown = "pid:[?]" if lv["ns"] is None else f"pid:[{lv['ns']}]"
            where = ""
            if lv["container"] is not None:
                c = Container(**lv["container"])
                where = f"  {c.label}" + (
                    "" if c.label.endswith(c.short_id) else f" ({c.short_id})"
                )
            click.echo(f"  level {lv['level']}  {shown}  pid {lv['pid']}{where}")
