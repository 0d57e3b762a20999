"""What ``run`` tells the outside world: structured logs, and an optional loopback HTTP endpoint with ``/healthz``
(converged? when was the last successful sync?) and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from manifest_runner._version import __version__
from manifest_runner.errors import ListenError
from manifest_runner.util.secrets import redact
from manifest_runner.util.text import printable


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and any ``extra`` fields."""

    _RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        document.update({k: v for k, v in record.__dict__.items() if k not in self._RESERVED})
        if record.exc_info:
            document["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(document, default=str)


class PlainFormatter(logging.Formatter):
    """What a command prints for a person: the message, with ``warning:`` or ``error:`` in front when it is one."""

    def format(self, record: logging.LogRecord) -> str:
        message = redact(printable(record.getMessage(), 4000))
        return message if record.levelno <= logging.INFO else f"{record.levelname.lower()}: {message}"


class TextFormatter(logging.Formatter):
    """Time, level, logger and the message, on one line: untrusted text escaped, secrets redacted."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's own name
        record.message = redact(printable(record.message, 4000))
        return super().formatMessage(record)


class RepeatFilter(logging.Filter):
    """Warnings and errors that repeat (Consul away: every watch says so every few seconds) are written once per
    ``window`` seconds, the next one saying how many were left out."""

    def __init__(self, window: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.getMessage())
        now = self.clock()
        with self._lock:
            first, left_out = self._seen.get(key, (0.0, 0))
            if key in self._seen and now - first < self.window:
                self._seen[key] = (first, left_out + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 1000:
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window}
        if left_out:
            record.msg = f"{record.getMessage()} (and {left_out} more times in the last {self.window:g}s)"
            record.args = None
        return True


def configure_logging(fmt: str = "text", level: str = "info") -> None:
    """``text`` (time, level, logger, message), ``json`` (one object a line) or ``plain`` (for one-shot commands)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RepeatFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif fmt == "plain":
        handler.setFormatter(PlainFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger("consul_manifest")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class Metrics:
    """The runner's metrics, kept and exposed by ``prometheus_client`` (one registry per runner): the exposition is
    the reference one (full-precision floats, ``# HELP`` and ``# TYPE``, counters ending in ``_total``)."""

    COUNTERS: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {
        "consul_manifest_syncs": ("Reconciliations of an owner with Consul.", ()),
        "consul_manifest_sync_errors": ("Reconciliations that failed.", ()),
        "consul_manifest_actions": ("Writes applied to Consul, by operation.", ("op",)),
        "consul_manifest_drift_repaired": ("Writes that repaired drift after the first sync.", ()),
        "consul_manifest_renders": ("Output files rewritten.", ()),
        "consul_manifest_resolutions": ("Dependency resolutions, by source.", ("source",)),
        "consul_manifest_heartbeats": ("TTL updates sent, by status.", ("status",)),
        "consul_manifest_dependency_errors": (
            "Resolutions of a dependency that did not come from Consul (cache, fallback or nothing), and why.",
            ("manifest", "dependency", "source"),
        ),
    }
    GAUGES: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {
        "consul_manifest_converged": ("1 when the last reconciliation of every owner succeeded.", ()),
        "consul_manifest_last_sync_timestamp_seconds": ("When the last successful reconciliation ended.", ()),
        "consul_manifest_dependency_source": (
            "1 for the source a dependency's current value came from (consul, cache, fallback, none).",
            ("manifest", "dependency", "source"),
        ),
        "consul_manifest_dependency_last_change_timestamp_seconds": (
            "When a dependency's value last changed.",
            ("manifest", "dependency"),
        ),
    }
    SUMMARIES: ClassVar[dict[str, str]] = {
        "consul_manifest_watch_latency_seconds": "From a watch waking up to the outputs written.",
    }
    SOURCES = ("consul", "cache", "fallback", "none")

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Summary

        self.registry = CollectorRegistry()
        self._extra: dict[str, float] = {}
        self._metrics: dict[str, Any] = {}
        for name, (text, labels) in self.COUNTERS.items():
            self._metrics[name] = Counter(name, text, labels, registry=self.registry)
        for name, (text, labels) in self.GAUGES.items():
            self._metrics[name] = Gauge(name, text, labels, registry=self.registry)
        for name, text in self.SUMMARIES.items():
            self._metrics[name] = Summary(name, text, registry=self.registry)
        self.registry.register(_Extra(self._extra))

    def _metric(self, name: str, labels: dict[str, str]) -> Any:
        metric = self._metrics[name.removesuffix("_total")]
        return metric.labels(**labels) if labels else metric

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self._metric(name, labels).inc(amount)

    def set(self, name: str, value: float, **labels: str) -> None:
        self._metric(name, labels).set(value)

    def observe(self, name: str, seconds: float) -> None:
        self._metric(name, {}).observe(seconds)

    def get(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else float(value)

    def dependency(self, manifest: str, dependency: str, source: str, changed_at: float | None) -> None:
        """A dependency's current source (and when its value changed, if it did now)."""
        for each in self.SOURCES:
            self.set(
                "consul_manifest_dependency_source",
                1.0 if each == source else 0.0,
                manifest=manifest,
                dependency=dependency,
                source=each,
            )
        if source != "consul":
            self.inc("consul_manifest_dependency_errors_total", manifest=manifest, dependency=dependency, source=source)
        if changed_at is not None:
            self.set(
                "consul_manifest_dependency_last_change_timestamp_seconds",
                changed_at,
                manifest=manifest,
                dependency=dependency,
            )

    def render(self, extra: dict[str, float] | None = None) -> str:
        from prometheus_client import generate_latest

        self._extra.clear()
        self._extra.update(extra or {})
        return generate_latest(self.registry).decode("utf-8")


class _Extra:
    """Counters kept elsewhere (the watches' wake-ups), read when scraped."""

    HELP: ClassVar[dict[str, str]] = {"consul_manifest_watch_wakeups": "Blocking queries that returned."}

    def __init__(self, values: dict[str, float]) -> None:
        self.values = values

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        for name, text in self.HELP.items():
            family = CounterMetricFamily(name, text)
            family.add_metric([], self.values.get(f"{name}_total", 0.0))
            yield family

    def describe(self) -> list[Any]:
        return []


def parse_listen(address: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (loopback) -> (host, port); ValueError saying what is wrong."""
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ValueError(f"{address!r} is not HOST:PORT (e.g. 127.0.0.1:9090, 0.0.0.0:9090, [::1]:9090)")
    if host.startswith("[") != host.endswith("]") or (":" in host and not host.startswith("[")):
        raise ValueError(f"{address!r}: write an IPv6 address in brackets, e.g. [::1]:9090")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{address!r}: the port must be a number from 0 to 65535")
    host = host.strip("[]") or "127.0.0.1"
    if any(ch.isspace() or ch in "/?#@" for ch in host):
        raise ValueError(f"{address!r}: {host!r} is not a host name or address")
    return host, int(port)


class StatusServer:
    """``/healthz`` (readiness: 503 while not converged), ``/livez`` (liveness) and ``/metrics`` on ``address``
    (loopback unless another is given; port 0 picks a free one).

    Raises OSError when the address cannot be bound (in use, not this host's)."""

    def __init__(
        self,
        address: str,
        health: Callable[[], tuple[bool, dict[str, Any]]],
        metrics: Metrics,
        extra: Callable[[], dict[str, float]] = dict,
    ) -> None:
        host, port = parse_listen(address)

        class Handler(BaseHTTPRequestHandler):
            server_version = f"consul-manifest/{__version__}"

            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/healthz":
                    ok, detail = health()
                    self._answer(200 if ok else 503, "application/json", json.dumps(detail, default=str) + "\n")
                elif self.path.split("?")[0] == "/metrics":
                    self._answer(200, "text/plain; version=0.0.4", metrics.render(extra()))
                elif self.path.split("?")[0] == "/livez":
                    # alive, whatever Consul's state: a liveness probe must not restart a pod while Consul is away
                    self._answer(200, "text/plain", "alive\n")
                else:
                    self._answer(404, "text/plain", "not found: /healthz, /livez, /metrics\n")

            def _answer(self, status: int, content_type: str, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        self.server = server_class((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="status", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        text = host.decode() if isinstance(host, bytes) else str(host)
        return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"

    def start(self) -> StatusServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_status(
    address: str,
    health: Callable[[], tuple[bool, dict[str, Any]]],
    metrics: Metrics,
    extra: Callable[[], dict[str, float]],
) -> StatusServer:
    """A started status endpoint; :class:`ListenError` when the address cannot be bound."""
    try:
        return StatusServer(address, health, metrics, extra).start()
    except OSError as err:
        raise ListenError(f"--listen {address}: {err.strerror or err}") from None


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
