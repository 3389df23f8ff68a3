"""unshare, setns, mount, umount2 and prctl through libc (Python 3.11's os module lacks them),
and posix_spawn with every attribute as given (os.posix_spawn can't reset glibc's own signals).

Thin wrappers: each raises OSError with the kernel's errno and does nothing else.

Bound with _ctypes, the C half of ctypes: ctypes itself (its Python half, with struct and types)
costs pidns run about a tenth of `python -c pass` to import, for the three types and one
function pointer class below, which are what ctypes.CDLL(None, use_errno=True) would build.
"""

from __future__ import annotations

import _ctypes
import os

TYPE_CHECKING = False  # typing costs pidns run an import
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


class _Int(_ctypes._SimpleCData):  # type: ignore[type-arg]  # ctypes.c_int
    _type_ = "i"


class _Long(_ctypes._SimpleCData):  # type: ignore[type-arg]  # ctypes.c_long
    _type_ = "l"


class _UInt(_ctypes._SimpleCData):  # type: ignore[type-arg]  # ctypes.c_uint
    _type_ = "I"


class _ULong(_ctypes._SimpleCData):  # type: ignore[type-arg]  # ctypes.c_ulong
    _type_ = "L"


class _CharP(_ctypes._SimpleCData):  # type: ignore[type-arg]  # ctypes.c_char_p
    _type_ = "z"


class _VoidP(_ctypes._SimpleCData):  # type: ignore[type-arg]  # ctypes.c_void_p
    _type_ = "P"


class _Function(_ctypes.CFuncPtr):
    """A libc function returning int, with errno saved for get_errno (use_errno=True)."""

    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _Int


class _Program:
    """The symbols of the running program and its libraries, as CDLL(None) opens them."""

    _handle = _ctypes.dlopen(None, os.RTLD_LOCAL)  # type: ignore[arg-type]  # dlopen(NULL)


def _bind(name: str, *argtypes: type[_ctypes._SimpleCData[Any]]) -> _Function:
    function = _Function((name, _Program()))  # type: ignore[arg-type]  # a CDLL is duck-typed
    function.argtypes = argtypes
    return function


_unshare = _bind("unshare", _Int)
_setns = _bind("setns", _Int, _Int)
_mount = _bind("mount", _CharP, _CharP, _CharP, _ULong, _CharP)
_umount2 = _bind("umount2", _CharP, _Int)
_prctl = _bind("prctl", _Int, _ULong, _ULong, _ULong, _ULong)
# open_tree(2) and move_mount(2) have no libc wrapper on Debian 12: syscall(2), x86_64 and
# aarch64 numbers (the same on both: the new mount API came after the tables merged)
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
AT_FDCWD = -100
MOVE_MOUNT_F_EMPTY_PATH = 0x4


POSIX_SPAWN_SETPGROUP = 0x02
POSIX_SPAWN_SETSIGDEF = 0x04
POSIX_SPAWN_SETSIGMASK = 0x08
_SIGSET_WORDS = 16  # sigset_t: 1024 bits


class _SigSet(_ctypes.Array):  # type: ignore[type-arg]  # c_ulong * 16
    _type_ = _ULong
    _length_ = _SIGSET_WORDS


class _SpawnAttr(_ctypes.Array):  # type: ignore[type-arg]  # posix_spawnattr_t (336 bytes), and more
    _type_ = _ULong
    _length_ = 64


def _check(result: int, what: str) -> None:
    if result == -1:
        code = _ctypes.get_errno()
        raise OSError(code, os.strerror(code), what)


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


def unshare(flags: int) -> None:
    _check(_unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace(s) of fd: an nsfs file, or a pidfd with a mask of CLONE_NEW* types."""
    _check(_setns(fd, nstype), "setns")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    _check(_mount(_bytes(source), _bytes(target), _bytes(fstype), flags, _bytes(data)), target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_umount2(_bytes(target), flags), target)


def open_tree_clone(path: str) -> int:
    """A detached bind mount of path (a file or directory), as an fd: it can be attached with
    move_mount in another mount namespace (one the caller may mount in)."""
    open_tree = _bind("syscall", _Long, _Int, _CharP, _UInt)  # bound here: rarely used
    fd = open_tree(_SYS_OPEN_TREE, AT_FDCWD, _bytes(path), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)
    _check(fd, path)
    return int(fd)


def move_mount_fd(fd: int, target: str) -> None:
    """Attach the detached mount fd (from open_tree_clone) at target."""
    move_mount = _bind("syscall", _Long, _Int, _CharP, _Int, _CharP, _UInt)
    _check(
        move_mount(_SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, _bytes(target), MOVE_MOUNT_F_EMPTY_PATH),
        target,
    )


def set_pdeathsig(sig: int) -> None:
    """Receive `sig` when the thread that forked this process exits."""
    _check(_prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def set_child_subreaper(on: bool = True) -> None:
    """Adopt orphaned descendants instead of letting them go to the namespace's init."""
    _check(_prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")


def _sigset(signals: Iterable[int]) -> _SigSet:
    """Bits set directly: sigaddset (and so os.posix_spawn) refuses glibc's own signals."""
    words = [0] * _SIGSET_WORDS
    for sig in signals:
        words[(sig - 1) // 64] |= 1 << ((sig - 1) % 64)
    return _SigSet(*words)


class Spawn:
    """posix_spawn(path, argv) made ready, then started by start(path) as many times as asked:
    with this process's environ, in process group `pgroup` (0: its own), with signal mask
    `sigmask` and `sigdefault` reset to SIG_DFL. glibc (with CLONE_VM, CLONE_VFORK) copies
    none of this process's memory.

    Made apart from the start so that a process can make it before it forks: the forked
    process that starts the command then touches, and so copies, fewer of its pages."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        pgroup: int,
        sigmask: Iterable[int],
        sigdefault: Iterable[int],
    ) -> None:
        self._attr = attr = _SpawnAttr()
        _check(-1 if _bind("posix_spawnattr_init", _VoidP)(attr) else 0, "posix_spawnattr_init")
        set_flags = _bind("posix_spawnattr_setflags", _VoidP, _Int)  # a short, passed as an int
        set_flags(attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK)
        _bind("posix_spawnattr_setpgroup", _VoidP, _Int)(attr, pgroup)
        _bind("posix_spawnattr_setsigmask", _VoidP, _VoidP)(attr, _sigset(sigmask))
        _bind("posix_spawnattr_setsigdefault", _VoidP, _VoidP)(attr, _sigset(sigdefault))
        args = [os.fsencode(a) for a in argv]
        self._argv = (_CharP * (len(args) + 1))(*args, None)  # (it keeps args alive)
        self._spawn = _bind("posix_spawn", _VoidP, _CharP, _VoidP, _VoidP, _VoidP, _VoidP)

    def start(self, path: str) -> int:
        """The started process's pid. OSError: exec's errno."""
        # read now: os.environ writes through to the C environ, which execv would also pass on
        environ = _VoidP.in_dll(_Program(), "environ").value  # type: ignore[arg-type]
        pid = _Int()
        code = self._spawn(
            _ctypes.byref(pid), os.fsencode(path), None, self._attr, self._argv, environ
        )
        if code:
            raise OSError(code, os.strerror(code), path)
        return int(pid.value)
