"""The options of one view (one mount), as `pidns mount` and the kernel's procfs accept them."""

from __future__ import annotations

import enum
from dataclasses import dataclass


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

    def describe(self) -> dict[str, object]:
        return {
            "hidepid": self.hidepid.word,
            "gid": self.gid,
            "subset": "pid" if self.subset_pid else None,
            "allow_other": self.allow_other,
            "virtualize": self.virtualize,
        }
