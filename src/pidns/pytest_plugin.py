"""pytest plugin (entry point `pytest11`): the `pidns_sandbox` fixture.

A test gets a throwaway PID namespace (pidns.Sandbox); processes it starts with
`pidns_sandbox.spawn(...)` live there. If any of them (or anything they started) is still alive
when the test ends, the test fails at teardown, naming them; the namespace is killed either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pidns.sandbox import Sandbox


@pytest.fixture
def pidns_sandbox() -> Iterator[Sandbox]:
    from pidns.sandbox import Sandbox

    with Sandbox() as sandbox:
        yield sandbox
        strays = sandbox.strays()
    if strays:
        listed = ", ".join(
            f"{v.pid} ({' '.join(v.task.cmdline) or v.task.comm})" for v in strays[:10]
        )
        more = f" and {len(strays) - 10} more" if len(strays) > 10 else ""
        pytest.fail(
            f"{len(strays)} process(es) started in pidns_sandbox outlived the test: {listed}{more}",
            pytrace=False,
        )
