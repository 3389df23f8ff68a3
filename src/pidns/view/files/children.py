"""/proc/PID/task/TID/children: the children's pids, each followed by a space, in the namespace's numbers."""

from __future__ import annotations

from pidns.view.files.ids import ToNs


def render_children(host_children: bytes, to_ns: ToNs) -> bytes:
    # Children live in the task's namespace or below, so each has a number wherever the task has one;
    # one that exits meanwhile translates to 0 and is dropped, as a later read would drop it.
    numbers = (to_ns(int(word)) for word in host_children.split())
    return b"".join(b"%d " % n for n in numbers if n)
