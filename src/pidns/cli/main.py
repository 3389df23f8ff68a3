"""Entry point. Loading click costs more than the whole Python start-up, so the paths that are
measured against other programs avoid it: `pidns --help` is printed from a static table, and
well-formed `pidns run` and `pidns ps --json` options are read by small parsers. Everything else
goes through click."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args in (["--help"], ["-h"]):
        from pidns.cli.commands import top_level_help

        sys.stdout.write(top_level_help())
        return 0
    if args[0] == "run":
        code = _fast_run(args[1:])
        if code is not None:
            if argv is None:
                _end_process(code)
            return code
    if args[0] == "ps":
        if argv is None:
            # This process ends with the command, and what it reads (10,000 tasks, say) holds
            # no cycles: the collector would only walk it again and again as it grows.
            import gc

            gc.disable()
        code = _fast_ps(args[1:])
        if code is not None:
            if argv is None:
                _end_process(code)
            return code
    from pidns.cli.app import run

    return run(args)


def _fast_run(args: list[str]) -> int | None:
    from pidns.cli.run_fast import execute, parse

    options = parse(args)
    if options is None:
        return None
    try:
        return execute(**options)  # type: ignore[arg-type]
    except (Exception, KeyboardInterrupt) as err:
        from pidns.cli.failure import exit_status

        return exit_status(err)


def _fast_ps(args: list[str]) -> int | None:
    from pidns.cli.ps_show import DEFAULT_COLUMNS, parse_fast, show

    options = parse_fast(args)
    if options is None:
        return None
    try:
        show(
            tree=False,
            cols=DEFAULT_COLUMNS.split(","),
            container_filter=None,
            as_json=True,
            **options,
        )
    except (Exception, KeyboardInterrupt) as err:
        from pidns.cli.failure import exit_status

        return exit_status(err)
    return 0


def _end_process(code: int) -> None:
    """Exit now, skipping the interpreter's teardown (as long as `python -c pass` takes to start,
    which pidns run is measured against; for `ps --json`, freeing every task it read too), when
    nothing is left for it to do: no atexit work, no other thread, stdio flushed. Otherwise
    return, and the ordinary exit runs."""
    import os

    atexit = sys.modules.get("atexit")  # never imported: nothing was registered with it
    if (atexit is not None and atexit._ncallbacks()) or (
        "threading" in sys.modules and _other_threads()
    ):
        return
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):  # let the ordinary exit report it, as it would have
        return
    os._exit(code)


def _other_threads() -> bool:
    import threading

    return threading.active_count() > 1


if __name__ == "__main__":
    sys.exit(main())
