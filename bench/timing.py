"""Timing helpers: interleaved runs, medians, so both sides of a ratio see the same machine noise."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable, Sequence


def time_call(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_quiet(argv: Sequence[str]) -> Callable[[], object]:
    def call() -> object:
        return subprocess.run(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
        )

    return call


def interleaved_ratio(
    ours: Callable[[], object], peer: Callable[[], object], rounds: int = 15, warmup: int = 2
) -> tuple[float, float, float]:
    """(median ours, median peer, median of per-round ratios), alternating which goes first."""
    for _ in range(warmup):
        ours()
        peer()
    ratios, mine, theirs = [], [], []
    for i in range(rounds):
        if i % 2:
            b = time_call(peer)
            a = time_call(ours)
        else:
            a = time_call(ours)
            b = time_call(peer)
        mine.append(a)
        theirs.append(b)
        ratios.append(a / b)
    return statistics.median(mine), statistics.median(theirs), statistics.median(ratios)
