"""The options of one view (one mount), as `pidns mount` and the kernel's procfs accept them, and
their one wire form (the control request, view records, `pidns mounts --json`)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BACKENDS = ("auto", "kernel", "fuse")  # what serves a view: auto is kernel when permitted


class Hidepid(enum.IntEnum):
    """The kernel's hidepid= values (fs/proc/root.c)."""

    OFF = 0
    NOACCESS = 1
    INVISIBLE = 2
    PTRACEABLE = 4

    @classmethod
    def parse(cls, text: str) -> Hidepid:
        names = {
            "off": cls.OFF,
            "noaccess": cls.NOACCESS,
            "invisible": cls.INVISIBLE,
            "ptraceable": cls.PTRACEABLE,
            "0": cls.OFF,
            "1": cls.NOACCESS,
            "2": cls.INVISIBLE,
            "4": cls.PTRACEABLE,
        }
        try:
            return names[text]
        except KeyError:
            raise ValueError(
                f"hidepid must be one of off, noaccess, invisible, ptraceable, not {text!r}"
            ) from None

    @property
    def word(self) -> str:
        return self.name.lower()


@dataclass(slots=True, frozen=True)
class ViewOptions:
    hidepid: Hidepid = Hidepid.OFF
    gid: int | None = None
    subset_pid: bool = False
    allow_other: bool = False
    virtualize: bool = False
    owner_uid: int = 0  # the mounting user: the only one admitted without allow_other
    cpus_from_quota: bool = False  # with virtualize: as many CPUs as the CFS quota lets run

    def kernel_options(self) -> list[str]:
        """The procfs mount options these translate to (the kernel backend)."""
        opts = []
        if self.hidepid != Hidepid.OFF:
            opts.append(f"hidepid={self.hidepid.word}")
        if self.gid is not None:
            opts.append(f"gid={self.gid}")
        if self.subset_pid:
            opts.append("subset=pid")
        return opts

    def to_wire(self) -> dict[str, Any]:
        """The options as JSON (the mounting user is not among them: the daemon takes it from the
        socket's peer credentials, never from a message)."""
        return {
            "hidepid": self.hidepid.word,
            "gid": self.gid,
            "subset": "pid" if self.subset_pid else None,
            "allow_other": self.allow_other,
            "virtualize": self.virtualize,
            "cpus_from_quota": self.cpus_from_quota,
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any], owner_uid: int = 0) -> ViewOptions:
        """to_wire's inverse; ValueError for a value no view accepts."""
        gid = data.get("gid")
        if gid is not None and not isinstance(gid, int):
            raise ValueError(f"gid must be a number, not {gid!r}")
        return cls(
            hidepid=Hidepid.parse(str(data.get("hidepid") or "off")),
            gid=gid,
            subset_pid=data.get("subset") == "pid",
            allow_other=bool(data.get("allow_other")),
            virtualize=bool(data.get("virtualize")),
            owner_uid=owner_uid,
            cpus_from_quota=bool(data.get("cpus_from_quota")),
        )

    def words(self) -> list[str]:
        """The options as `pidns mounts` prints them: only what differs from the defaults."""
        words = self.kernel_options()
        words += [w for w in ("allow_other", "virtualize", "cpus_from_quota") if getattr(self, w)]
        return words
