"""Run every benchmark module (bench/bench_*.py), print its ratios, merge them into results.json.

A module defines `run() -> dict[str, float]`; each key is a ratio (or a figure, for the few
absolute measures the issues ask for). `python -m bench NAME...` runs only the named modules.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path

RESULTS = Path(__file__).with_name("results.json")


def main(selected: list[str]) -> int:
    names = sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if m.name.startswith("bench_")
    )
    if selected:
        unknown = set(selected) - set(names)
        if unknown:
            print(
                f"bench: unknown module {', '.join(sorted(unknown))}; have {', '.join(names)}",
                file=sys.stderr,
            )
            return 2
        names = selected
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in names:
        print(f"== {name}", flush=True)
        figures = importlib.import_module(f"bench.{name}").run()
        for key, value in figures.items():
            print(f"  {key:<28} {value:10.3f}", flush=True)
        results.update(figures)
        RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
