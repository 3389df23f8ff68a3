"""Serving the collector over HTTP (`/metrics`, `/namespaces.json`) or into a textfile.

`/metrics` is prometheus_client's own WSGI app: it answers in the Prometheus text format, or in
OpenMetrics when the scraper's Accept header asks for it (Prometheus does), gzipped when asked.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app, write_to_textfile
from prometheus_client.exposition import ThreadingWSGIServer

from pidns.errors import PidnsError, UsageError
from pidns.export.collector import Exporter

StartResponse = Callable[..., Any]
INDEX = b"""<html><head><title>pidns export</title></head><body>
<h1>pidns export</h1>
<p><a href="/metrics">/metrics</a>: per-PID-namespace series for Prometheus</p>
<p><a href="/namespaces.json">/namespaces.json</a>: the namespace tree, as pidns ls --json</p>
</body></html>
"""


def registry_for(exporter: Exporter) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    return registry


def make_app(exporter: Exporter) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    metrics = make_wsgi_app(registry_for(exporter))

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            result: Iterable[bytes] = metrics(environ, start_response)
            return result
        if environ.get("REQUEST_METHOD") != "GET":
            start_response("405 Method Not Allowed", [("Allow", "GET")])
            return [b"use GET\n"]
        if path == "/namespaces.json":
            body = exporter.current().namespaces_json
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [INDEX]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /namespaces.json\n"]

    return app


def parse_listen(value: str) -> tuple[str, int]:
    """`ADDR:PORT`, `[V6ADDR]:PORT` or `:PORT` (every address)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {value}: expected ADDR:PORT (e.g. 127.0.0.1:9717)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingWSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def bind(exporter: Exporter, listen: str) -> WSGIServer:
    """A server bound to `listen` (not yet serving); the error names the address when not."""
    host, port = parse_listen(listen)
    cls = _Server6 if ":" in host else _Server
    try:
        return make_server(host, port, make_app(exporter), cls, handler_class=_Quiet)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise PidnsError(
                f"--listen {listen}: the address is in use (stop what listens there, "
                "or choose another port)"
            ) from None
        if err.errno == errno.EADDRNOTAVAIL or isinstance(err, socket.gaierror):
            raise UsageError(f"--listen {listen}: no such local address") from None
        if err.errno == errno.EACCES:
            raise PidnsError(
                f"--listen {listen}: permission denied (ports below 1024 need privilege)"
            ) from None
        raise PidnsError(f"--listen {listen}: {err.strerror or err}") from None


def serve(server: WSGIServer, stop: threading.Event) -> None:
    """Serve until `stop` is set."""
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def write_textfile(exporter: Exporter, path: str) -> None:
    """The Prometheus text format at `path`, written atomically (a temporary file beside it,
    renamed over it) as node_exporter's textfile collector wants."""
    try:
        write_to_textfile(path, registry_for(exporter))
    except OSError as err:
        raise PidnsError(f"--textfile {path}: {err.strerror or err}") from None
