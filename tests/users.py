"""Becoming an unprivileged user in tests: the uid, an install of pidns that user can read, and
fixtures for a home it owns and a /dev/fuse it may open. Registered for every test by
tests/conftest.py."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
REPO = Path(__file__).resolve().parents[1]

# What the user's install holds besides pidns: its dependencies, and pytest (the plugin's test).
_ALSO = ("pytest",)


class UserInstall:
    """pidns installed from a wheel into a venv any user can read (a checkout in a 0700 home,
    such as /root, is not: its editable install and its venv are unreadable to others), with a
    copy of the tests package beside it for probes that import it.

    `python` runs that venv, `pidns` is its console script, `argv(...)` runs the CLI with it,
    `tests_root` goes first on a probe's sys.path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.venv = root / "venv"
        self.python = str(self.venv / "bin" / "python")
        self.pidns = str(self.venv / "bin" / "pidns")
        self.tests_root = str(root)

    def argv(self, *args: str) -> list[str]:
        return [self.python, "-m", "pidns.cli.main", *args]


def _others_may_run(path: str) -> bool:
    """Whether a user who is neither owner nor group can run path: every directory on its real
    path searchable by others, the file readable and executable by them."""
    real = Path(os.path.realpath(path))
    if not real.is_file() or stat.S_IMODE(real.stat().st_mode) & 0o005 != 0o005:
        return False
    return all(stat.S_IMODE(d.stat().st_mode) & 0o001 for d in real.parents)


def _runs_as(uid: int, python: str) -> bool:
    argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", python, "-c",
            "import json, encodings, site"]  # fmt: skip
    return subprocess.run(argv, capture_output=True, cwd="/").returncode == 0


def _interpreter_for_users() -> str:
    """This Python (the same version, for the copied dependencies) where other users can run it:
    the venv's base, else the system's python3.X."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base = getattr(sys, "_base_executable", sys.executable)
    candidates = [os.path.realpath(base), f"/usr/bin/{version}", f"/usr/local/bin/{version}"]
    for candidate in dict.fromkeys(candidates):
        if _others_may_run(candidate) and _runs_as(NOBODY, candidate):
            return candidate
    pytest.fail(f"no {version} that uid {NOBODY} can run (tried {', '.join(candidates)})")


def _closure(names: tuple[str, ...]) -> list[importlib.metadata.Distribution]:
    """The installed distributions that `names` need here, themselves included (no extras)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [Requirement(n) for n in names]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        found[name] = dist = importlib.metadata.distribution(name)
        todo += [Requirement(r) for r in dist.requires or []]
    return list(found.values())


def _copy_installed(dist: importlib.metadata.Distribution, site: Path) -> None:
    """What pip put into site-packages for dist, as pip put it (pure-Python packages only)."""
    for file in dist.files or []:
        if file.parts[0] == ".." or "__pycache__" in file.parts:
            continue  # scripts outside site-packages, bytecode
        source = Path(str(dist.locate_file(file)))
        if source.is_file():
            (site / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, site / file)


def build_user_install(root: Path, checkout: Path = REPO) -> UserInstall:
    """Build the wheel of this checkout (python -m build), make a venv under root from an
    interpreter other users can run, put pidns's installed dependencies into it, then install
    the wheel with pip, which checks that they satisfy it. Nothing is fetched."""
    install = UserInstall(root)
    source = root / "source"  # a copy: building in the checkout would race other sessions
    shutil.copytree(
        checkout / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(checkout / name, source / name)
    wheels = root / "wheels"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(wheels),
                    str(source)], check=True, capture_output=True)  # fmt: skip
    subprocess.run([_interpreter_for_users(), "-m", "venv", "--without-pip", str(install.venv)],
                   check=True, capture_output=True)  # fmt: skip
    site = next(install.venv.glob("lib/python*/site-packages"))
    for dist in _closure(("pidns", *_ALSO)):
        if canonicalize_name(dist.metadata["Name"]) == "pidns":
            continue  # the wheel's, below
        _copy_installed(dist, site)
    wheel = next(wheels.glob("pidns-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", install.python, "install", "--no-index",
                    "--no-cache-dir", "--quiet", str(wheel)], check=True, capture_output=True)  # fmt: skip
    shutil.copytree(
        checkout / "tests", root / "tests", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.rmtree(source)
    for path in (root, *root.rglob("*")):
        if not path.is_symlink():
            mode = stat.S_IMODE(path.lstat().st_mode)
            path.chmod(mode | 0o444 | (0o111 if path.is_dir() or mode & 0o100 else 0))
    return install


_built: list[UserInstall] = []


def installed_for_users() -> UserInstall:
    """The session's install that other users can read, built on first use (a few seconds) and
    removed when the session ends."""
    if not _built:
        _built.append(build_user_install(Path(tempfile.mkdtemp(prefix="pidns-user-install-"))))
    return _built[0]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    while _built:
        shutil.rmtree(_built.pop().root, ignore_errors=True)


@pytest.fixture
def user_install() -> UserInstall:
    return installed_for_users()


@pytest.fixture
def device_for_users() -> Iterator[None]:
    """fusermount3 opens /dev/fuse with the user's rights: make it 0666, as udev does on Debian,
    for the test's duration when this machine has it root-only."""
    mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    if mode & 0o006 != 0o006:
        os.chmod("/dev/fuse", mode | 0o666)
    try:
        yield
    finally:
        os.chmod("/dev/fuse", mode)


@pytest.fixture
def home() -> Iterator[Path]:
    """A home (and XDG_RUNTIME_DIR) the user owns, where the user can reach it."""
    path = Path(tempfile.mkdtemp(prefix="pidns-nobody-"))
    os.chown(path, NOBODY, NOBODY)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
