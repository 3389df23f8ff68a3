"""The pytest11 plugin: `pidns_sandbox` gives a test a namespace and fails it on leftovers."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.root


def test_fixture_is_registered_and_passes_a_clean_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_clean(pidns_sandbox):
            p = pidns_sandbox.spawn(["sh", "-c", "exit 0"])
            assert p.wait(10) == 0
            assert [v.task.comm for v in pidns_sandbox.ps()] == ["pidns-init"]
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_process_that_outlives_the_test_fails_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os

        namespaces = []

        def test_leaky(pidns_sandbox):
            pidns_sandbox.spawn(["sh", "-c", "setsid sleep 600 &"]).wait(10)
            namespaces.append(pidns_sandbox.ns.ino)

        def test_namespace_was_killed_anyway():
            for name in os.listdir("/proc"):
                if name.isdigit():
                    try:
                        assert os.stat(f"/proc/{name}/ns/pid").st_ino != namespaces[0]
                    except OSError:
                        pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*1 process(es) started in pidns_sandbox outlived the test*sleep 600*"]
    )
