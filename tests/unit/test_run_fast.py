"""The click-free reading of `pidns run` options agrees with the click command's, or defers to it."""

from __future__ import annotations

import click
from hypothesis import given
from hypothesis import strategies as st

from pidns.cli.run import command
from pidns.cli.run_fast import parse

OPTION = st.one_of(
    st.sampled_from(
        [
            "--user",
            "--no-user",
            "--no-init",
            "--die-with-parent",
            "--no-die-with-parent",
            "--virtualize",
            "--cpus-from-quota",
        ]
    ).map(lambda f: [f]),
    st.tuples(
        st.sampled_from(
            [
                "--nest",
                "--forward-to",
                "--kill-timeout",
                "--name",
                "--status-json",
                "--memory",
                "--memory-swap",
                "--cpus",
                "--cpuset",
                "--pids-max",
            ]
        ),
        st.sampled_from(
            ["1", "3", "0", "-1", "x", "child", "group", "2.5", "inf", "nan", "web", "-", "64M"]
        ),
        st.booleans(),
    ).map(lambda t: [f"{t[0]}={t[1]}"] if t[2] else [t[0], t[1]]),
    st.sampled_from(["--help", "--bogus", "-x"]).map(lambda f: [f]),
)
ARGV = st.lists(st.sampled_from(["true", "sh", "-c", "--", "--nest", "x"]), max_size=3)


def click_reading(args: list[str]) -> dict[str, object] | None:
    try:
        ctx = command.make_context("run", list(args), resilient_parsing=False)
    except (click.UsageError, click.exceptions.Exit):
        return None
    params = dict(ctx.params)
    if not params["argv"]:
        return None
    return params


@given(st.lists(OPTION, max_size=5), st.booleans(), ARGV)
def test_fast_path_agrees_with_click(
    options: list[list[str]], dashdash: bool, argv: list[str]
) -> None:
    args = [a for opt in options for a in opt] + (["--"] if dashdash else []) + argv
    fast = parse(args)
    if fast is None:
        return  # click reads it: same messages, same help
    assert fast == click_reading(args)


def test_fast_path_reads_the_common_forms() -> None:
    parsed = parse(["--nest", "3", "--name=web", "--no-user", "--", "sleep", "1"])
    assert parsed is not None
    assert parsed["nest"] == 3 and parsed["name"] == "web" and parsed["user"] is False
    assert parsed["argv"] == ("sleep", "1")
    assert parse(["--help"]) is None
    assert parse(["--nest", "0", "--", "true"]) is None
    assert parse([]) is None
