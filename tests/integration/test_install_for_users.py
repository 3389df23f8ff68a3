"""Installs beyond the checkout: the wheel (`python -m build`) installed with pip gives a
working `pidns` and its pytest plugin, and other users run it even when the checkout is in a
home they cannot enter (a checkout in /root, mode 0700)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.users import AS_NOBODY, REPO, UserInstall, build_user_install, installed_for_users

pytestmark = pytest.mark.root

PLUGIN_TEST = """
def test_sandbox_from_the_installed_plugin(pidns_sandbox):
    p = pidns_sandbox.spawn(["sh", "-c", "echo $$"], stdout=-1, text=True)
    out, _ = p.communicate()
    assert p.returncode == 0 and out.strip() == str(p.ns_pid)
"""


def _as_nobody(argv: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PIDNS_STATE_DIR", "XDG_RUNTIME_DIR")}
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(home))
    return subprocess.run([*AS_NOBODY, *argv], capture_output=True, text=True, timeout=60,
                          env=env, cwd="/")  # fmt: skip


@pytest.fixture
def private_checkout() -> Iterator[Path]:
    """A copy of the checkout where the issue found it: inside a 0700 home."""
    home = Path(tempfile.mkdtemp(prefix="pidns-private-home-"))  # mkdtemp makes it 0700
    checkout = home / "pidns"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "src", checkout / "src", ignore=ignore)
    shutil.copytree(REPO / "tests", checkout / "tests", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, checkout / name)
    try:
        yield checkout
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_user_runs_the_install_of_a_checkout_it_cannot_read(
    private_checkout: Path, home: Path
) -> None:
    # What the tests ran before: the checkout's sources, which the user cannot reach.
    direct = _as_nobody(["sh", "-c", 'PYTHONPATH="$0/src" python3 -c "import pidns"',
                         str(private_checkout)], home)  # fmt: skip
    assert direct.returncode != 0 and "No module named 'pidns'" in direct.stderr
    root = Path(tempfile.mkdtemp(prefix="pidns-user-install-"))
    try:
        install = build_user_install(root, private_checkout)
        ran = _as_nobody([install.pidns, "run", "--", "sh", "-c", "echo $$"], home)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == "2\n"  # pid 1 is the init; the command comes next
        probe = (
            "import sys; sys.path.insert(0, sys.argv[1]); import tests.users, pidns; print('ok')"
        )
        imported = _as_nobody([install.python, "-c", probe, install.tests_root], home)
        assert imported.stdout == "ok\n", imported.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_installed_wheel_has_the_cli_and_the_pytest_plugin(tmp_path: Path) -> None:
    install: UserInstall = installed_for_users()
    helped = subprocess.run([install.pidns, "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "Usage:" in helped.stdout
    # The package comes from the venv, not from the checkout.
    where = subprocess.run([install.python, "-c", "import pidns; print(pidns.__file__)"],
                           capture_output=True, text=True, cwd="/", check=True)  # fmt: skip
    assert where.stdout.startswith(str(install.venv)), where.stdout
    (tmp_path / "test_plugin.py").write_text(PLUGIN_TEST)
    tested = subprocess.run(
        [install.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "1 passed" in tested.stdout
