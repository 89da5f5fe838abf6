"""The small HTTP server of ``sieve run`` and ``sieve batcher``: ``/metrics``, ``/healthz``, ``/readyz``.

``/metrics`` is the Prometheus text format, ``/healthz`` says the process is alive,
``/readyz`` whether the process can do its job now: for ``sieve run``, recovery done, the
worker consuming, the broker answering and partitions assigned (see
:meth:`streams.worker.loop.StreamWorker.readiness`); the batcher: subscribed. A 503's body
says why.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from streams.exit_codes import PortInUse

log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry
    ready: Callable[[], "bool | tuple[bool, str]"]

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n")
        elif path == "/readyz":
            answer = self.ready()
            ok, why = answer if isinstance(answer, tuple) else (answer, "recovering or not consuming")
            self._send(200 if ok else 503, b"ready\n" if ok else f"not ready: {why}\n".encode())
        else:
            self._send(404, b"try /metrics, /healthz or /readyz\n")

    def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args) -> None:  # scrapes every few seconds: keep them out of the log
        log.debug("http %s", fmt % args)


def serve(registry: CollectorRegistry, host: str, port: int,
          ready: Callable[[], "bool | tuple[bool, str]"] = lambda: True) -> ThreadingHTTPServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` from a daemon thread; return the server.

    ``port=0`` picks a free port: read it back from ``server.server_address[1]``. ``ready``
    returns a bool, or ``(ready, why not)``: the reason goes into the 503's body.

    Raises:
        PortInUse: the port is taken or not ours to bind (the message names it and the setting).
    """
    handler = type("SieveMetricsHandler", (_Handler,), {"registry": registry, "ready": staticmethod(ready)})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise PortInUse(f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); set metrics.port "
                        "(SIEVE_METRICS__PORT or --metrics-port) to a free port, or 0 for any") from exc
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sieve-metrics", daemon=True).start()
    return server
