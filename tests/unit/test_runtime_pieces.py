"""Pure parts of the runtime: pipe records, exit statuses, why user namespaces are unavailable."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest

from pidns.runtime import report
from pidns.runtime.init import exit_code
from pidns.runtime.userns import why_unavailable


def test_records_round_trip_through_a_pipe() -> None:
    r, w = os.pipe()
    report.send(w, "child", 0, 1234)
    report.send(w, "error", 2, "mount-proc", errno.EPERM, "tab\there\nnewline")
    os.close(w)
    reader = report.Reader(r)
    first, second = reader.next(), reader.next()
    assert reader.next() is None
    os.close(r)
    assert first is not None and (first.kind, first.fields) == ("child", ("0", "1234"))
    assert second is not None and second.fields == ("2", "mount-proc", "1", "tab here newline")


@pytest.mark.parametrize(
    ("status", "code"),
    [(0, 0), (3 << 8, 3), (signal.SIGKILL, 137), (signal.SIGTERM, 143), (signal.SIGINT, 130)],
)
def test_exit_code(status: int, code: int) -> None:
    assert exit_code(status) == code


def sysctls(tmp_path: Path, **values: str) -> str:
    for name, value in values.items():
        path = tmp_path / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    return str(tmp_path)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"kernel__unprivileged_userns_clone": "0"}, "kernel.unprivileged_userns_clone=1"),
        ({"user__max_user_namespaces": "0"}, "user.max_user_namespaces"),
        (
            {"kernel__apparmor_restrict_unprivileged_userns": "1"},
            "kernel.apparmor_restrict_unprivileged_userns=0",
        ),
    ],
)
def test_disabled_user_namespaces_name_the_sysctl(
    tmp_path: Path, values: dict[str, str], named: str
) -> None:
    assert named in why_unavailable(errno.EPERM, sysctls(tmp_path, **values))


def test_limit_reached(tmp_path: Path) -> None:
    root = sysctls(tmp_path, user__max_user_namespaces="100")
    assert "user.max_user_namespaces" in why_unavailable(errno.ENOSPC, root)
