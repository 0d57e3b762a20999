"""What ``run`` tells the outside world: structured logs, and an optional loopback HTTP endpoint with ``/healthz``
(converged? when was the last successful sync?) and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from manifest_runner._version import __version__


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and any ``extra`` fields."""

    _RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        document.update({k: v for k, v in record.__dict__.items() if k not in self._RESERVED})
        if record.exc_info:
            document["error"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


class PlainFormatter(logging.Formatter):
    """What a command prints for a person: the message, with ``warning:`` or ``error:`` in front when it is one."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return message if record.levelno <= logging.INFO else f"{record.levelname.lower()}: {message}"


def configure_logging(fmt: str = "text", level: str = "info") -> None:
    """``text`` (time, level, logger, message), ``json`` (one object a line) or ``plain`` (for one-shot commands)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif fmt == "plain":
        handler.setFormatter(PlainFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("consul_manifest")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class Metrics:
    """Counters and gauges, thread-safe, rendered in Prometheus' text format."""

    HELP: ClassVar[dict[str, tuple[str, str]]] = {
        "consul_manifest_syncs_total": ("counter", "Reconciliations of an owner with Consul."),
        "consul_manifest_sync_errors_total": ("counter", "Reconciliations that failed."),
        "consul_manifest_actions_total": ("counter", "Writes applied to Consul, by operation."),
        "consul_manifest_drift_repaired_total": ("counter", "Writes that repaired drift after the first sync."),
        "consul_manifest_renders_total": ("counter", "Output files rewritten."),
        "consul_manifest_resolutions_total": ("counter", "Dependency resolutions, by source."),
        "consul_manifest_watch_wakeups_total": ("counter", "Blocking queries that returned."),
        "consul_manifest_heartbeats_total": ("counter", "TTL updates sent, by status."),
        "consul_manifest_converged": ("gauge", "1 when the last reconciliation of every owner succeeded."),
        "consul_manifest_last_sync_timestamp_seconds": ("gauge", "When the last successful reconciliation ended."),
        "consul_manifest_watch_latency_seconds": ("summary", "From a watch waking up to the outputs written."),
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[(name, tuple(sorted(labels.items())))] = value

    def get(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values.get((name, tuple(sorted(labels.items()))), 0.0)

    def observe(self, name: str, seconds: float) -> None:
        self.inc(f"{name}_count")
        self.inc(f"{name}_sum", seconds)

    def render(self, extra: dict[str, float] | None = None) -> str:
        with self._lock:
            values = dict(self._values)
        for name, value in (extra or {}).items():
            values[(name, ())] = value
        lines = []
        for name, (kind, text) in self.HELP.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            for (metric, labels), value in sorted(values.items()):
                base = metric.removesuffix("_count").removesuffix("_sum") if kind == "summary" else metric
                if base != name:
                    continue
                label_text = "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else ""
                lines.append(f"{metric}{label_text} {value:g}")
        return "\n".join(lines) + "\n"


class StatusServer:
    """``/healthz`` and ``/metrics`` on a loopback address (``127.0.0.1:9090``; port 0 picks a free one)."""

    def __init__(
        self,
        address: str,
        health: Callable[[], tuple[bool, dict[str, Any]]],
        metrics: Metrics,
        extra: Callable[[], dict[str, float]] = dict,
    ) -> None:
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"--listen {address}: the status endpoint binds to loopback only")

        class Handler(BaseHTTPRequestHandler):
            server_version = f"consul-manifest/{__version__}"

            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/healthz":
                    ok, detail = health()
                    self._answer(200 if ok else 503, "application/json", json.dumps(detail, default=str) + "\n")
                elif self.path.split("?")[0] == "/metrics":
                    self._answer(200, "text/plain; version=0.0.4", metrics.render(extra()))
                else:
                    self._answer(404, "text/plain", "not found: /healthz, /metrics\n")

            def _answer(self, status: int, content_type: str, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer((host, int(port)), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="status", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> StatusServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
