"""`pidns export` at fleet size: 10,000 tasks in 200 namespaces.

export_scrape_vs_ls_json_10k   one GET /metrics / one `pidns ls --json` (medians, interleaved):
                               the same snapshot plus formatting, so at most 1.0
export_scrape_cpu_s_10k        CPU seconds (user + system) the exporter spends per scrape
export_rss_mb_10k              the exporter's RSS after those scrapes (MB)
export_rss_growth_mb_1000      RSS after 1,000 scrapes - RSS after the first 100 (MB)
export_fds_growth_1000         open fds after 1,000 scrapes - after the first 100
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from bench.timing import interleaved_ratio, run_quiet

BIN = Path(sys.executable).parent
NAMESPACES = 200
PER_NAMESPACE = 50  # sh + 49 sleepers (+ the unshare outside): about 10,000 tasks in all


@contextlib.contextmanager
def _namespaces() -> Iterator[None]:
    script = f"for i in $(seq {PER_NAMESPACE - 1}); do sleep 100000 & done; wait"
    procs = [
        subprocess.Popen(
            ["unshare", "--pid", "--fork", "sh", "-c", script],
            start_new_session=True,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(NAMESPACES)
    ]
    try:
        deadline = time.monotonic() + 120
        while sum(1 for n in os.listdir("/proc") if n.isdigit()) < NAMESPACES * PER_NAMESPACE:
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark's namespaces did not start")
            time.sleep(0.2)
        yield
    finally:
        for proc in procs:
            for kid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
                with contextlib.suppress(OSError):
                    os.kill(int(kid), 9)  # the namespace dies with its init
            proc.kill()
            proc.wait()
        time.sleep(0.5)


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_fds(pid: int) -> tuple[float, int]:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024, fds
    return 0.0, fds


def run() -> dict[str, float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/metrics"
    out: dict[str, float] = {}
    with _namespaces():
        tasks = sum(1 for n in os.listdir("/proc") if n.isdigit())
        print(f"  ({tasks} tasks alive in {NAMESPACES} namespaces)")
        exporter = subprocess.Popen(
            [str(BIN / "pidns"), "export", "--listen", f"127.0.0.1:{port}", "--min-interval", "0"],
            stderr=subprocess.DEVNULL,
        )
        try:

            def scrape() -> bytes:
                with urllib.request.urlopen(url, timeout=60) as response:
                    body: bytes = response.read()
                    return body

            for _ in range(100):
                with contextlib.suppress(OSError):
                    scrape()
                    break
                time.sleep(0.1)
            a, b, r = interleaved_ratio(scrape, run_quiet([str(BIN / "pidns"), "ls", "--json"]), 7)
            print(f"  GET /metrics {a * 1e3:.0f} ms, pidns ls --json {b * 1e3:.0f} ms")
            out["export_scrape_vs_ls_json_10k"] = r
            before = _cpu(exporter.pid)
            for _ in range(10):
                scrape()
            out["export_scrape_cpu_s_10k"] = (_cpu(exporter.pid) - before) / 10
            for _ in range(100 - 10 - 2 - 7 * 2):
                scrape()
            rss_100, fds_100 = _rss_fds(exporter.pid)
            for _ in range(900):
                scrape()
            rss_1000, fds_1000 = _rss_fds(exporter.pid)
            out["export_rss_mb_10k"] = rss_1000
            out["export_rss_growth_mb_1000"] = rss_1000 - rss_100
            out["export_fds_growth_1000"] = fds_1000 - fds_100
            print(f"  RSS {rss_100:.1f} MB after 100 scrapes, {rss_1000:.1f} MB after 1,000")
        finally:
            exporter.terminate()
            exporter.wait(timeout=30)
    return out
