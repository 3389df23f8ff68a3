"""`pidns demo`: build a small nested namespace tree, show it with `ls`, `ps --tree` and host tools
through the kernel's and pidns's own proc trees; then a real container (podman, when it is here)
named by pidns, with a pid 1 that doesn't reap, its memory limit as `free` sees it and its CPUs as
glibc counts them; clean up."""

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
    innermost, show them as `pidns ls` and `pidns ps --tree` do, then kill them all. Then, as
    root with podman, a real container: named by `pidns ls`, entered by `podman:NAME`, its
    memory limit shown by `free` and its CPUs by sysfs through --virtualize; removed at the end."""
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
    _container(step)


PODMAN = [
    "podman",
    "--runtime",
    "runc",
    "--cgroup-manager",
    "cgroupfs",
]
# What podman needs on a host with cgroup v1 and low rlimit ceilings, without a network backend.
RUN_FLAGS = ["--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
BUSYBOX = "/bin/busybox"
# sh starts a child, then becomes `sleep`: a pid 1 that never reaps, so the child stays a zombie
PID1 = ["sh", "-c", "sleep 1 & exec sleep 300"]


def _container_missing() -> str | None:
    import shutil

    if os.geteuid() != 0:
        return "runs a podman container: needs root"
    if shutil.which("podman") is None or shutil.which("runc") is None:
        return "needs podman and runc (scripts/bootstrap.sh installs them)"
    if not os.path.exists(BUSYBOX):
        return "needs busybox-static for the image (scripts/bootstrap.sh installs it)"
    return None


def _container(step: str) -> None:
    """A podman container from an image built here (busybox only, no registry), whose pid 1
    (`sleep`, after sh exec'd it) leaves its child's zombie unreaped."""
    import subprocess
    import tempfile
    import time

    from pidns.cli.app import run as cli

    click.echo(f"\n{step} a podman container, found and named by pidns (no daemon asked)")
    missing = _container_missing()
    if missing is not None:
        click.echo(f"(skipped: {missing})")
        return
    name = f"pidns-demo-{os.getpid()}"
    image = f"localhost/{name}:latest"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "check": True}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = os.path.join(tmp, "rootfs")
            os.makedirs(os.path.join(root, "bin"))
            for d in ("proc", "sys", "dev", "etc", "tmp"):
                os.mkdir(os.path.join(root, d))
            subprocess.run(["cp", BUSYBOX, os.path.join(root, "bin/busybox")], check=True)
            for applet in ("sh", "sleep", "ps", "cat", "free"):
                os.symlink("busybox", os.path.join(root, "bin", applet))
            tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
            subprocess.run([*PODMAN, "import", "-", image], stdin=tar.stdout, **quiet)  # type: ignore[call-overload]
            tar.wait()
        limits = ["--memory", "64m", "--cpuset-cpus", "0"]
        subprocess.run(
            [*PODMAN, "run", "-d", "--name", name, *RUN_FLAGS, *limits, image, *PID1],
            **quiet,  # type: ignore[call-overload]
        )
        time.sleep(6)  # the zombie is older than a moment: its pid 1 doesn't reap
        click.echo(f"\n{step} pidns ls   (the container's namespace, its zombie, REAPS no)")
        cli(["ls"])
        click.echo(f"\n{step} pidns ps --ns podman:{name}")
        cli(["ps", "--ns", f"podman:{name}"])
        click.echo(f"\n{step} pidns exec --ns podman:{name} --backend fuse -- ps -o pid,stat,comm")
        cli(
            [
                "exec",
                "--ns",
                f"podman:{name}",
                "--backend",
                "fuse",
                "--",
                "ps",
                "-o",
                "pid,stat,comm",
            ]
        )
        click.echo(
            f"\n{step} pidns exec --ns podman:{name} --virtualize -- free -m   "
            "(its memory limit, 64 MiB, and its usage, from its own cgroup)"
        )
        virtual = ["exec", "--ns", f"podman:{name}", "--backend", "fuse", "--virtualize"]
        cli([*virtual, "--", "free", "-m"])
        click.echo(
            f"\n{step} pidns exec --ns podman:{name} --virtualize -- cat /sys/devices/system/cpu/online"
            "   (its cpuset, CPU 0: what glibc, psutil and JVMs count)"
        )
        cli([*virtual, "--", "cat", "/sys/devices/system/cpu/online"])
    except subprocess.CalledProcessError as err:
        reason = (err.stderr or b"").decode(errors="replace").strip().splitlines()
        click.echo(f"(podman failed: {reason[-1] if reason else err})")
    finally:
        subprocess.run([*PODMAN, "rm", "-f", "-t", "0", name], capture_output=True, check=False)
        subprocess.run([*PODMAN, "rmi", "-f", image], capture_output=True, check=False)
