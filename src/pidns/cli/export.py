"""`pidns export`: a Prometheus endpoint (or node_exporter textfile) of per-namespace series."""

from __future__ import annotations

import os
import signal
import threading

import click

from pidns.cli.options import proc_option
from pidns.cli.output import warn
from pidns.errors import UsageError

DEFAULT_LISTEN = "127.0.0.1:9717"


@click.command("export")
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="ADDR:PORT",
    help="Where to serve /metrics and /namespaces.json (':PORT' for every address).",
)
@proc_option
@click.option(
    "--textfile",
    metavar="PATH",
    help="Write node_exporter's textfile-collector format to PATH (a .prom file, replaced "
    "atomically every --min-interval) instead of serving HTTP.",
)
@click.option("--once", is_flag=True, help="With --textfile: write it once and exit.")
@click.option(
    "--min-interval",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    metavar="S",
    help="Reuse a snapshot for S seconds: scrapes closer together share one read of --proc.",
)
@click.option(
    "--cgroup-root",
    default="/sys/fs/cgroup",
    show_default=True,
    metavar="DIR",
    help="Where the cgroup hierarchies are mounted (for pids.max and pids.current).",
)
def command(
    listen: str,
    proc: str,
    textfile: str | None,
    once: bool,
    min_interval: float,
    cgroup_root: str,
) -> None:
    """Export per-PID-namespace series for Prometheus.

    Serves GET /metrics (Prometheus text format, or OpenMetrics when the scraper asks) and
    GET /namespaces.json (what 'pidns ls --json' prints) until SIGTERM or Ctrl-C. Each scrape
    reads one snapshot of --proc; fork and exit counters come from the proc connector (root, in
    the initial namespaces) and count from the exporter's start.

    Series: pidns_namespace_info, _tasks{state}, _threads, _zombies_oldest_age_seconds,
    _init_reaps, _forks_total, _exits_total, _start_time_seconds, _pids_max, _pids_current,
    and pidns_scrape_duration_seconds, pidns_scrape_unreadable_tasks. Labels: ns (the
    namespace's inode), never a pid.
    """
    from pidns.export.collector import Exporter
    from pidns.export.events import EventCounter
    from pidns.export.server import bind, parse_listen, serve, write_textfile

    if once and textfile is None:
        raise UsageError("--once goes with --textfile (an HTTP server runs until stopped)")
    if textfile is not None:
        _check_textfile(textfile)
    else:
        parse_listen(listen)

    events: EventCounter | None = None
    if not once:
        events = EventCounter(proc)
        try:
            events.open()
        except OSError as err:
            events.close()
            events = None
            warn(
                "no fork/exit counters: the proc connector is not available "
                f"({err.strerror or err}; it needs root in the initial namespaces)"
            )
    exporter = Exporter(proc, min_interval, events, cgroup_root)
    try:
        stop = threading.Event()
        server = None if textfile is not None else bind(exporter, listen)
        try:
            first = exporter.current()  # a bad --proc fails here, before anyone scrapes
            if first.namespaces == 0:
                raise UsageError(f"--proc {proc}: no tasks found in it (is it a procfs mount?)")
            if once:
                assert textfile is not None
                write_textfile(exporter, textfile)
                return
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, lambda *_: stop.set())
            if server is not None:
                serve(server, stop)
                return
            assert textfile is not None
            interval = max(min_interval, 1.0)
            write_textfile(exporter, textfile)
            while not stop.wait(interval):
                write_textfile(exporter, textfile)
        finally:
            if server is not None:
                server.server_close()
    finally:
        if exporter.events is not None:
            exporter.events.close()


def _check_textfile(path: str) -> None:
    if not path.endswith(".prom"):
        raise UsageError(
            f"--textfile {path}: node_exporter's textfile collector reads only files "
            "ending in .prom"
        )
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise UsageError(f"--textfile {path}: no directory {directory} to write it in")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"--textfile {path}: {directory} is not writable by this user")
