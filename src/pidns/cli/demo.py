"""`pidns demo`: build a small nested namespace tree, show it with `ls`, `ps --tree` and host tools
through the kernel's and pidns's own proc trees, clean up."""

from __future__ import annotations

import contextlib
import os

import click


def _members(inodes: set[int]) -> int:
    """Live processes in any of the namespaces (from the host's /proc)."""
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                count += os.stat(f"/proc/{name}/ns/pid").st_ino in inodes
    return count


@click.command("demo")
@click.option("--nest", type=click.IntRange(min=1, max=8), default=2, show_default=True)
def command(nest: int) -> None:
    """Create NEST nested PID namespaces (rootless when not root) with a few processes in the
    innermost, show them as `pidns ls` and `pidns ps --tree` do, then kill them all."""
    import subprocess

    from pidns.cli.app import run as cli
    from pidns.sandbox import Sandbox

    name = f"demo-{os.getpid()}"
    step = click.style("==>", fg="cyan", bold=True)
    click.echo(
        f"{step} Sandbox(nest={nest}, name={name!r}): one init per level, each with its /proc"
    )
    with Sandbox(nest=nest, name=name) as sb:
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        sb.spawn(["sh", "-c", "sleep 300 & sleep 300 & wait"], **quiet)
        sb.spawn(["sleep", "300"], **quiet)
        inodes = {ns.ino for ns in sb.namespaces}
        chain = " > ".join(str(ns) for ns in sb.namespaces)
        click.echo(f"{step} namespaces, outermost first: {chain}")
        click.echo(f"\n{step} pidns ls")
        cli(["ls"])
        outer = str(sb.namespaces[0].ino)
        click.echo(f"\n{step} pidns ps --tree --ns {outer}   (the outermost level's view)")
        cli(["ps", "--tree", "--ns", outer])
        click.echo(f"\n{step} pidns ps --ns {name}   (the innermost, by name)")
        cli(["ps", "--ns", name])
        click.echo(
            f"\n{step} pidns exec --ns {name} -- ps -ef   (a host tool, with the namespace's /proc)"
        )
        code = cli(["exec", "--ns", name, "--", "ps", "-ef"])
        if code:
            click.echo(f"(exec exited with {code})")
        click.echo(
            f"\n{step} pidns exec --ns {name} --backend fuse -- ps -ef   "
            "(the same tree served by pidns's own FUSE implementation)"
        )
        from pidns.view.api import fuse_missing

        missing = fuse_missing()
        if missing is not None:
            click.echo(f"(skipped: {missing})")
        else:
            code = cli(["exec", "--ns", name, "--backend", "fuse", "--", "ps", "-ef"])
            if code:
                click.echo(f"(exec exited with {code})")
    left = _members(inodes)
    click.echo(f"\n{step} cleaned up: {left} process(es) left in those namespaces")
