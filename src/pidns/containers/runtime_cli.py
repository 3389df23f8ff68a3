"""Tier 3, opt-in: ask the runtime's own CLI (`--runtime-cli`, or PIDNS_RUNTIME_CLI=1).

Each answer is a claim like a state file's: its pid is verified against the kernel before it
resolves. A CLI that is missing, fails or takes longer than the timeout (PIDNS_RUNTIME_CLI_TIMEOUT,
default 5 s) is named in the error; it is never left running.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

_enabled: bool | None = None  # set by the CLI option; None: the environment decides
FORMAT = "{{.Id}}\t{{.State.Pid}}\t{{.Name}}"


def use(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    if _enabled is not None:
        return _enabled
    return os.environ.get("PIDNS_RUNTIME_CLI", "").lower() in ("1", "yes", "true", "on")


def timeout() -> float:
    try:
        return float(os.environ.get("PIDNS_RUNTIME_CLI_TIMEOUT", "5"))
    except ValueError:
        return 5.0


@dataclass(slots=True)
class Answer:
    id: str
    pid: int  # 0: the runtime says it is not running
    name: str | None
    tool: str


def command_for(runtime: str, key: str, namespace: str | None) -> list[str] | None:
    if runtime in ("docker", "podman"):
        return [runtime, "inspect", "--type", "container", "--format", FORMAT, key]
    if runtime == "containerd":
        return [
            "nerdctl",
            "--namespace",
            namespace or "default",
            "inspect",
            "--format",
            FORMAT,
            key,
        ]
    if runtime == "crio":
        return ["crictl", "inspect", "-o", "json", key]
    return None


def parse_answer(runtime: str, tool: str, out: str) -> Answer | str:
    """One container from the CLI's output, or why not (none, several, unreadable)."""
    if runtime == "crio":
        try:
            data = json.loads(out)
            status = data["status"]
            return Answer(status["id"], int(data["info"]["pid"]), status["metadata"]["name"], tool)
        except (ValueError, KeyError, TypeError):
            return f"{tool} printed no container"
    lines = [line for line in out.splitlines() if line.strip()]
    if len(lines) != 1:
        return f"{tool} printed {len(lines)} containers"
    parts = lines[0].split("\t")
    if len(parts) != 3 or not parts[1].isdigit():
        return f"{tool} printed {lines[0]!r}"
    return Answer(parts[0], int(parts[1]), parts[2].lstrip("/") or None, tool)


def ask(runtime: str, key: str, namespace: str | None = None) -> Answer | str:
    """The runtime CLI's answer for key (a name or id), or one line on why there is none."""
    argv = command_for(runtime, key, namespace)
    if argv is None:
        return f"no runtime CLI is known for {runtime}"
    tool = argv[0]
    limit = timeout()
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=limit, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        return f"{tool} is not installed"
    except subprocess.TimeoutExpired:  # run() kills and reaps the child before raising
        return f"{tool} did not answer within {limit:g} s"
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no output"])[0]
        return f"{tool} failed: {first}"
    return parse_answer(runtime, tool, done.stdout)
