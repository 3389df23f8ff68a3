"""The command table: name -> ("module:attribute" of a click command, one-line summary). Kept import-free so that
`pidns --help` can print it without loading click."""

COMMANDS: dict[str, tuple[str, str]] = {
    "ls": ("pidns.cli.ls:command", "Show the tree of PID namespaces."),
    "ps": ("pidns.cli.ps:command", "List the tasks a namespace sees, numbered as it sees them."),
    "translate": ("pidns.cli.translate:command", "Translate a pid from one namespace to another."),
    "which": (
        "pidns.cli.which:command",
        "Show the namespaces and containers a host pid belongs to, with its number in each.",
    ),
    "run": (
        "pidns.cli.run:command",
        "Run a command in new nested PID namespaces with their own /proc.",
    ),
    "exec": (
        "pidns.cli.exec:command",
        "Run a command inside an existing namespace, with its /proc.",
    ),
    "mount": (
        "pidns.cli.mount:mount_command",
        "Serve a namespace's proc tree at a mountpoint (kernel or FUSE).",
    ),
    "lxcfs": (
        "pidns.cli.lxcfs:command",
        "Serve an LXCFS-compatible tree: each reader sees its own cgroup's resources.",
    ),
    "umount": (
        "pidns.cli.mount:umount_command",
        "Unmount a view made by 'pidns mount' or a tree made by 'pidns lxcfs'.",
    ),
    "mounts": ("pidns.cli.mount:mounts_command", "List the views made by 'pidns mount'."),
    "daemon": (
        "pidns.cli.daemon:command",
        "Show or restart the view daemon that serves FUSE views.",
    ),
    "export": (
        "pidns.cli.export:command",
        "Serve per-namespace series for Prometheus (or write a textfile).",
    ),
    "demo": (
        "pidns.cli.demo:command",
        "Build a nested namespace tree and a podman container, show them, clean up.",
    ),
}

SUMMARY = "PID namespaces and their proc trees: create, inspect, serve."

NS_HELP = (
    "Namespace designators (--ns): an inode (4026532241 or pid:[4026532241]), @PID, "
    "a path to an nsfs file (/proc/PID/ns/pid), 'host', a name given by 'pidns run --name', or a "
    "container: docker:NAME, podman:NAME, containerd:[NS/]ID, crio:ID, k8s:[NS/]POD[/CONTAINER], "
    "k8s-pod:UID, machine:NAME, lxc:NAME, cgroup:PATH."
)


def top_level_help() -> str:
    width = max(len(name) for name in COMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())
    return (
        "Usage: pidns [OPTIONS] COMMAND [ARGS]...\n\n"
        f"  {SUMMARY}\n\n"
        f"  {NS_HELP}\n\n"
        "Options:\n"
        "  --version  Show the version and exit.\n"
        "  --help     Show this message and exit.\n\n"
        f"Commands:\n{rows}\n\n"
        "Run 'pidns COMMAND --help' for a command's options.\n"
    )
