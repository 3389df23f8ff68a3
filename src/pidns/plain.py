"""Plain slotted records: the equality and repr a dataclass would have, without dataclasses.

The /proc model and the parsed proc files are made by every command that reads the tree, and
importing dataclasses (with inspect, ast, dis, re, enum) costs `ps --json` more start-up than
any other module it needs.
"""

from __future__ import annotations


class Plain:
    """A record whose fields are its class's __slots__ (a leading `_`: a cache, not a field).
    Equal to a record of the same class with equal fields; unhashable, as it is mutable."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in fields(self))

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in fields(self))
        return f"{type(self).__name__}({inner})"


def fields(record: Plain) -> list[str]:
    """The names of a record's fields (dataclasses.fields, as names)."""
    slots: tuple[str, ...] = type(record).__slots__
    return [name for name in slots if not name.startswith("_")]
