"""The HTTP endpoint Prometheus scrapes, served with prometheus-client's exposition format.

    GET /metrics/prometheus           text format 0.0.4, every metric in metrics.CATALOG
    GET /metrics/prometheus/summary   the same numbers as JSON

Bound to 127.0.0.1 by default; with a token configured, requests must carry
`Authorization: Bearer <token>` or get 401.

Every reply names the process that served it in `X-Breakwater-Instance`. After the metrics
actor restarts, the old process may still answer for a moment, or cut a reply short as it is
killed; a client that must see the restarted actor's numbers waits for the new instance name
rather than for "the port answers again".
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from breakwater.metrics import MetricsAggregator

log = logging.getLogger("breakwater.metrics_http")

PROMETHEUS_PATH = "/metrics/prometheus"
SUMMARY_PATH = "/metrics/prometheus/summary"
INSTANCE_HEADER = "X-Breakwater-Instance"


class _AggregatorCollector:
    def __init__(self, aggregator: MetricsAggregator) -> None:
        self.aggregator = aggregator

    def collect(self) -> Iterator[Metric]:
        return self.aggregator.collect()


class MetricsServer:
    def __init__(
        self,
        aggregator: MetricsAggregator,
        host: str,
        port: int,
        token: str | None = None,
        instance: str | None = None,
    ) -> None:
        """`instance` names this server's process in every reply (the process id by default);
        it must differ between an actor and its restarted successor."""
        self.aggregator = aggregator
        self.instance = instance or f"pid-{os.getpid()}"
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_AggregatorCollector(aggregator))  # type: ignore[arg-type]
        self.token = token
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> MetricsServer:
        self.thread.start()
        log.info("metrics endpoint on http://%s:%d%s", *self.address, PROMETHEUS_PATH)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _authorized(self, header: str | None) -> bool:
        if self.token is None:
            return True
        expected = f"Bearer {self.token}".encode()
        return header is not None and hmac.compare_digest(header.encode(), expected)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not server._authorized(self.headers.get("Authorization")):
                    self._reply(401, b"bearer token required\n", "text/plain", {"WWW-Authenticate": "Bearer"})
                    return
                path = self.path.split("?", 1)[0].rstrip("/")
                if path == PROMETHEUS_PATH:
                    self._reply(200, generate_latest(server.registry), CONTENT_TYPE_LATEST)
                elif path == SUMMARY_PATH:
                    body = json.dumps(server.aggregator.summary(), indent=1).encode()
                    self._reply(200, body, "application/json")
                else:
                    self._reply(404, b"not found: try /metrics/prometheus\n", "text/plain")

            def _reply(self, code: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header(INSTANCE_HEADER, server.instance)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug(format, *args)

        return Handler
