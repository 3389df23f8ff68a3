"""`pidns run` without click: reading well-formed options, and running with them.

Loading click costs about twice what Python itself needs to start, and `pidns run` is measured
against `python -c pass`. This parser accepts only well-formed input; anything else (--help, a
bad value, an unknown option) returns None and the click command handles it, so the messages
and the help stay click's. A test checks both readings agree.
"""

from __future__ import annotations

_FLAGS = {
    "--user": ("user", True),
    "--no-user": ("user", False),
    "--no-init": ("no_init", True),
    "--die-with-parent": ("die_with_parent", True),
    "--no-die-with-parent": ("die_with_parent", False),
    "--virtualize": ("virtualize", True),
    "--cpus-from-quota": ("cpus_from_quota", True),
}
_VALUES = ("--nest", "--forward-to", "--kill-timeout", "--name", "--status-json")
# Read as given; runtime/cgroup.py (imported only when one is given) checks them.
_LIMITS = {
    "--memory": "memory",
    "--memory-swap": "memory_swap",
    "--cpus": "cpus",
    "--cpuset": "cpuset",
    "--pids-max": "pids_max",
}


def defaults() -> dict[str, object]:
    return {
        "nest": 1,
        "user": None,
        "no_init": False,
        "forward_to": "child",
        "kill_timeout": 2.0,
        "die_with_parent": True,
        "name": None,
        "status_json": None,
        "view": None,  # --view is read by click only: mounting a view dwarfs click's cost
        "view_backend": "auto",
        "memory": None,
        "memory_swap": None,
        "cpus": None,
        "cpuset": None,
        "pids_max": None,
        "virtualize": False,
        "cpus_from_quota": False,
    }


def parse(args: list[str]) -> dict[str, object] | None:
    """The options of `pidns run` and its argv, or None to let click read them."""
    out = defaults()
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break  # the command starts here
        if arg in _FLAGS:
            key, value = _FLAGS[arg]
            out[key] = value
            i += 1
            continue
        name, eq, inline = arg.partition("=")
        if name not in _VALUES and name not in _LIMITS:
            return None
        if eq:
            raw = inline
            i += 1
        elif i + 1 < len(args):
            raw = args[i + 1]
            i += 2
        else:
            return None
        if not _store(out, name, raw):
            return None
    argv = args[i:]
    if not argv:
        return None
    out["argv"] = tuple(argv)
    return out


def _store(out: dict[str, object], name: str, raw: str) -> bool:
    if name in _LIMITS:
        out[_LIMITS[name]] = raw
    elif name == "--nest":
        if not raw.isdigit() or int(raw) < 1:
            return False
        out["nest"] = int(raw)
    elif name == "--forward-to":
        if raw not in ("child", "group"):
            return False
        out["forward_to"] = raw
    elif name == "--kill-timeout":
        try:
            value = float(raw)
        except ValueError:
            return False
        if not value >= 0 or value == float("inf"):
            return False
        out["kill_timeout"] = value
    elif name == "--name":
        out["name"] = raw
    else:
        out["status_json"] = raw
    return True


def execute(
    *,
    nest: int,
    user: bool | None,
    no_init: bool,
    forward_to: str,
    kill_timeout: float,
    die_with_parent: bool,
    name: str | None,
    status_json: str | None,
    argv: tuple[str, ...],
    view: str | None = None,
    view_backend: str = "auto",
    memory: str | None = None,
    cpus: str | None = None,
    cpuset: str | None = None,
    pids_max: str | None = None,
    virtualize: bool = False,
    memory_swap: str | None = None,
    cpus_from_quota: bool = False,
) -> int:
    """Run the command with options already read (by click, or by the fast path in main)."""
    from pidns.runtime.run import run

    if name is not None:
        from pidns.names import check_name

        check_name(name)
    return run(
        argv,
        nest=nest,
        user=user,
        init=not no_init,
        forward_to=forward_to,
        kill_timeout=kill_timeout,
        die_with_parent=die_with_parent,
        name=name,
        status_json=status_json,
        view=view,
        view_backend=view_backend,
        memory=memory,
        cpus=cpus,
        cpuset=cpuset,
        pids_max=pids_max,
        virtualize=virtualize,
        memory_swap=memory_swap,
        cpus_from_quota=cpus_from_quota,
    )
