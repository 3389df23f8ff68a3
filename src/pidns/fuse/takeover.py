"""What a successor server needs to take up a FUSE connection its predecessor started.

The INIT handshake happens once per connection, with the first server: what the kernel offered and
what was agreed then stays true for the connection's life, so it travels with the connection's fd
(Negotiated.to_wire, kept by the holder). A successor adopts the connection with it and never sees
an INIT of its own.

A connection survives its server only when the kernel can send again what that server read and
never answered (NOTIFY_RESEND: the kernel offered HAS_RESEND): otherwise the requests a dead server
was handling would wait for an answer that never comes, and the connection had better end at once,
its readers getting ENOTCONN, as if nothing held it (`survives`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pidns.kernel import fuse_abi as abi


@dataclass(slots=True, frozen=True)
class Negotiated:
    major: int
    minor: int  # the one in force: the smaller of the kernel's and ours
    offered: int  # the kernel's INIT flags (flags2 << 32 included)
    agreed: int  # the flags of our INIT reply

    @property
    def resend(self) -> bool:
        return bool(self.offered & abi.HAS_RESEND)

    def to_wire(self) -> dict[str, Any]:
        return {
            "major": self.major,
            "minor": self.minor,
            "offered": self.offered,
            "agreed": self.agreed,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Negotiated:
        return cls(
            int(data["major"]), int(data["minor"]), int(data["offered"]), int(data["agreed"])
        )
