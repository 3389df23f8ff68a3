"""Records a forked stage sends back over a pipe: one line, one write (atomic below PIPE_BUF).

child  LEVEL PID            the stage at LEVEL forked its child, numbered PID in its namespace
ready  LEVEL                the innermost stage is set up (the command is about to start)
error  LEVEL STEP ERRNO WHAT  a step failed; the stage exits with status 125 (126/127 for exec)
exit   CODE SIGNAL          how the command ended (written by the process that waited for it)
"""

from __future__ import annotations

import os


class Record:
    __slots__ = ("fields", "kind")

    def __init__(self, kind: str, fields: tuple[str, ...]) -> None:
        self.kind = kind
        self.fields = fields


def send(fd: int, kind: str, *fields: object) -> None:
    text = "\t".join([kind, *(str(f).replace("\t", " ").replace("\n", " ") for f in fields)])
    os.write(fd, os.fsencode(text[:4000]) + b"\n")


def parse(data: bytes) -> list[Record]:
    out = []
    for line in data.split(b"\n"):
        if line:
            kind, *fields = os.fsdecode(line).split("\t")
            out.append(Record(kind, tuple(fields)))
    return out


def read_all(fd: int) -> list[Record]:
    """Every record until all writers have closed the pipe."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return parse(b"".join(chunks))


class Reader:
    """Records one at a time, as the stages write them."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._pending: list[Record] = []
        self._partial = b""
        self.eof = False

    def next(self) -> Record | None:
        """The next record, or None once every writer has closed the pipe."""
        while not self._pending:
            if self.eof:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.eof = True
                chunk = b"\n"
            *lines, self._partial = (self._partial + chunk).split(b"\n")
            self._pending = parse(b"\n".join(lines))
        return self._pending.pop(0)
