"""The launcher's side of signal forwarding: catch the forwarded signals, pass them inward."""

from __future__ import annotations

TYPE_CHECKING = False  # importing typing would slow down pidns run
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable, Iterable
    from types import FrameType
    from typing import Any

    _Handler = Callable[[int, FrameType | None], Any] | int | None
else:
    import _signal as signal  # the same calls without signal's enums (an import of enum)


class Forwarder:
    """Installs handlers at once; signals caught before a target is known are sent on attach.

    Every signal is caught, also one the launcher was started with ignored (a background job of
    a non-interactive shell gets SIGINT and SIGQUIT ignored, nohup SIGHUP): a supervisor forwards
    what it is sent. Those signals are listed in `ignored`, and the command gets them ignored
    again, as it would have run without pidns, so the disposition the caller chose still
    decides what such a signal does to it."""

    def __init__(self, signals: Iterable[int]) -> None:
        self._send: Callable[[int], None] | None = None
        self._pending: list[int] = []
        self._saved: dict[int, _Handler] = {}
        self.ignored: frozenset[int] = frozenset()
        ignored = []
        for sig in signals:
            previous = signal.getsignal(sig)
            if previous == signal.SIG_IGN:
                ignored.append(sig)
            self._saved[sig] = previous
            signal.signal(sig, self._handle)
        self.ignored = frozenset(ignored)

    def _handle(self, sig: int, frame: FrameType | None) -> None:
        if self._send is None:
            self._pending.append(sig)
        else:
            self._send(sig)

    def attach(self, send: Callable[[int], None]) -> None:
        self._send = send
        pending, self._pending = self._pending, []
        for sig in pending:
            send(sig)

    def restore(self) -> None:
        for sig, previous in self._saved.items():
            signal.signal(sig, previous)
        self._saved.clear()
