"""Entry point. `pidns --help` is answered from a static table: importing click alone costs
more than the whole Python start-up, so it is loaded only when a command runs."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args in (["--help"], ["-h"]):
        from pidns.cli.commands import top_level_help

        sys.stdout.write(top_level_help())
        return 0
    from pidns.cli.app import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
