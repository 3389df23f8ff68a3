"""The FUSE view against the kernel's procfs for the same namespace, on random namespace trees."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.differential.harness import compare, scenario

pytestmark = [pytest.mark.root, pytest.mark.fuse]

level = st.fixed_dictionaries(
    {
        "sleepers": st.integers(0, 3),
        "threads": st.integers(0, 2),
        "zombie": st.booleans(),
        "setsid": st.booleans(),
        "exiter": st.one_of(st.none(), st.floats(0.0, 0.05)),
    }
)
specs = st.fixed_dictionaries(
    {
        "levels": st.lists(level, min_size=1, max_size=4),
        "joined": st.booleans(),
    }
)


@contextlib.contextmanager
def views(host_pid: int) -> Iterator[tuple[str, str]]:
    from pidns.view.api import open_view

    with tempfile.TemporaryDirectory() as tmp:
        fuse, kernel = os.path.join(tmp, "fuse"), os.path.join(tmp, "kernel")
        os.mkdir(fuse)
        os.mkdir(kernel)
        with (
            open_view(f"@{host_pid}", fuse, backend="fuse"),
            open_view(f"@{host_pid}", kernel, backend="kernel"),
        ):
            yield fuse, kernel


@settings(
    max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False
)
@given(spec=specs, which=st.integers(0, 3))
def test_fuse_view_matches_kernel(spec: dict[str, Any], which: int) -> None:
    with scenario(spec) as info:
        ns = info["ns"][min(which, len(info["ns"]) - 1)]
        member = info["members"].get(ns)
        assert member, f"no member found for {ns}: {info}"
        with views(member) as (fuse, kernel):
            problems = compare(fuse, kernel, settle=0.15)
    assert not problems, "\n".join(problems)
