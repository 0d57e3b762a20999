"""The one adapter to Consul: py-consul, with its gaps filled. The only module that imports the client library.

What it adds to py-consul:

- settings from Consul's own environment contract with flag precedence (:mod:`manifest_runner.settings`), instead
  of py-consul's (where ``CONSUL_HTTP_TOKEN`` silently beats an explicit token);
- the token sent as the ``X-Consul-Token`` header on **every** request (py-consul forgets it on ``/v1/txn``), never
  in a URL, a log line or an error;
- ``unix:///path`` addresses, ``CONSUL_TLS_SERVER_NAME``, CA folder, client certificates;
- a timeout on every request (a blocking query adds its wait and Consul's wait/16 jitter);
- answers mapped to one exception tree naming the operation and status (:mod:`manifest_runner.errors`):
  unreachable or "no leader" -> :class:`ConsulUnavailable`, 401/403 and TLS refusals -> :class:`ConsulRefused`,
  anything else -> :class:`ConsulRequestError`; 404 and a transaction's 409 are answers, not errors;
- transactions batched under the server's operation limit (64 before Consul 1.14, 128 after), learnt from the
  agent's version and corrected from a 413 answer;
- a count of requests by kind, for tests ("an unchanged apply writes nothing") and benchmarks.

``ConsulClient.raw`` is a genuine ``consul.Consul`` on the same HTTP layer, so code written for py-consul
(``registry.consul.agent.check.ttl_pass(...)``) gets all of the above too.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import consul
import consul.std
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool

from manifest_runner.errors import ConsulError, ConsulRefused, ConsulRequestError, ConsulUnavailable
from manifest_runner.settings import ConsulSettings, Endpoint

DEFAULT_WAIT = 300.0
TXN_BODY_LIMIT = 512 * 1024
_PASS_THROUGH = {404}


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: str


class TxnFailed(ConsulError):
    """A transaction was rolled back (HTTP 409): nothing in it was applied. ``errors`` are ``(op_index, what)``."""

    def __init__(self, errors: list[tuple[int, str]]) -> None:
        self.errors = errors
        detail = "; ".join(f"op {index}: {what}" for index, what in errors) or "rolled back"
        super().__init__(f"transaction rolled back: {detail}", operation="PUT /v1/txn", status=409)


class TxnTooLarge(ConsulRequestError):
    """The server refused a transaction for its number of operations; ``limit`` is the server's limit."""

    def __init__(self, message: str, limit: int) -> None:
        self.limit = limit
        super().__init__(message, operation="PUT /v1/txn", status=413)


class _UnixConnection(HTTPConnection):
    def __init__(self, *args: Any, socket_path: str, **kwargs: Any) -> None:
        self._socket_path = socket_path
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if isinstance(self.timeout, int | float):
            sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError as err:
            sock.close()
            raise urllib3.exceptions.NewConnectionError(self, f"unix socket {self._socket_path}: {err}") from err
        return sock


class _UnixPool(HTTPConnectionPool):
    def __init__(self, socket_path: str, **kwargs: Any) -> None:
        super().__init__("localhost", **kwargs)
        self._socket_path = socket_path

    def _new_conn(self) -> HTTPConnection:
        self.num_connections += 1
        return _UnixConnection(host="localhost", timeout=self.timeout.connect_timeout, socket_path=self._socket_path)


class _UnixAdapter(HTTPAdapter):
    """Sends every request of the session to a unix socket (``CONSUL_HTTP_ADDR=unix:///path``)."""

    def __init__(self, socket_path: str) -> None:
        self._socket_path = socket_path
        self._pool: _UnixPool | None = None
        self._pool_lock = threading.Lock()
        super().__init__()

    def get_connection_with_tls_context(
        self, request: Any, verify: Any, proxies: Any = None, cert: Any = None
    ) -> HTTPConnectionPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = _UnixPool(self._socket_path, maxsize=10)
            return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        super().close()


class _TLSAdapter(HTTPAdapter):
    """Verifies the server certificate against ``CONSUL_TLS_SERVER_NAME`` and sends it as SNI."""

    def __init__(self, server_name: str) -> None:
        self._server_name = server_name
        super().__init__()

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        pool_kwargs["server_hostname"] = self._server_name
        pool_kwargs["assert_hostname"] = self._server_name
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)


class _HTTPClient(consul.std.HTTPClient):  # type: ignore[misc]
    """py-consul's HTTP layer with our transport, timeouts, token header, error mapping and request counting."""

    def __init__(self, endpoint: Endpoint, settings: ConsulSettings, token: str | None) -> None:
        host = "localhost" if endpoint.scheme == "unix" else endpoint.host
        scheme = "http" if endpoint.scheme == "unix" else endpoint.scheme
        super().__init__(
            host,
            endpoint.port,
            scheme,
            settings.verify(),
            settings.client_certificate(),
            connections_timeout=settings.timeout,
        )
        self.base_uri = f"{scheme}://{'[' + host + ']' if ':' in host else host}:{endpoint.port}"
        self.token = token
        self.display = endpoint.url
        self.requests: Counter[str] = Counter()
        self._count_lock = threading.Lock()
        session: requests.Session = self.session
        session.trust_env = False  # no proxies or .netrc from the environment: Consul is reached directly
        if endpoint.socket_path is not None:
            session.mount("http://", _UnixAdapter(endpoint.socket_path))
        elif scheme == "https" and settings.tls_server_name:
            session.mount("https://", _TLSAdapter(settings.tls_server_name))

    def timeout(self, params: Any) -> float | None:
        values = dict(params or ())
        base = float(self.connections_timeout)
        if "index" not in values:
            return base
        wait = consul.std.parse_duration(values["wait"]) if "wait" in values else DEFAULT_WAIT
        return base + wait + wait / 16

    def _send(
        self,
        method: str,
        callback: Callable[[Any], Any],
        path: str,
        *,
        params: Any,
        headers: Any,
        data: Any = None,
        raw: bool = False,
    ) -> Any:
        operation = f"{method} {path}"
        all_headers = dict(headers or {})
        if self.token and "X-Consul-Token" not in all_headers:
            all_headers["X-Consul-Token"] = self.token
        with self._count_lock:
            self.requests[method] += 1
        try:
            response = self.session.request(
                method,
                self.uri(path, params),
                headers=all_headers,
                data=data,
                verify=self.verify,
                cert=self.cert,
                timeout=self.timeout(params),
            )
        except requests.exceptions.SSLError as err:
            raise ConsulRefused(
                f"TLS handshake with {self.display} failed: {_reason(err)}", operation=operation
            ) from None
        except requests.exceptions.Timeout:
            raise ConsulUnavailable(
                f"no answer from {self.display} within {self.timeout(params):g}s", operation=operation
            ) from None
        except requests.exceptions.RequestException as err:
            raise ConsulUnavailable(
                f"cannot reach Consul at {self.display}: {_reason(err)}", operation=operation
            ) from None
        _raise_for_status(response, operation, path)
        body: Any = response.content if raw else response.content.decode("utf-8", "replace")
        return callback(consul.base.Response(response.status_code, response.headers, body))

    def get(self, callback: Any, path: str, params: Any = None, headers: Any = None, raw: bool = False) -> Any:
        return self._send("GET", callback, path, params=params, headers=headers, raw=raw)

    def put(self, callback: Any, path: str, params: Any = None, data: Any = "", headers: Any = None) -> Any:
        return self._send("PUT", callback, path, params=params, headers=headers, data=data)

    def delete(self, callback: Any, path: str, params: Any = None, data: Any = "", headers: Any = None) -> Any:
        return self._send("DELETE", callback, path, params=params, headers=headers, data=data)

    def post(self, callback: Any, path: str, params: Any = None, data: Any = "", headers: Any = None) -> Any:
        return self._send("POST", callback, path, params=params, headers=headers, data=data)

    def close(self) -> None:
        self.session.close()


_CLIENT_CERT_ALERTS = ("BAD_CERTIFICATE", "CERTIFICATE_REQUIRED", "UNKNOWN_CA", "HANDSHAKE_FAILURE")


def _reason(err: Exception) -> str:
    """The innermost useful reason of a requests/urllib3 error, without URLs or headers, with a hint."""
    text = str(err)
    hostname = re.search(r"hostname '([^']+)' doesn't match (?:either of )?(.+?)\"?\)", text)
    if hostname:
        names = hostname.group(2)
        return f"the certificate is not for {hostname.group(1)!r} (it names {names}); see CONSUL_TLS_SERVER_NAME"
    verify = re.search(r"certificate verify failed: ([^(')]+)", text)
    if verify:
        return f"certificate verify failed: {verify.group(1).strip()}; see CONSUL_CACERT / CONSUL_CAPATH"
    alert = re.search(r"\[SSL: ([A-Z0-9_]+)\] ([^(']+)", text)
    if alert:
        hint = "; the server wants a client certificate it trusts (CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY)"
        return alert.group(2).strip() + (hint if any(a in alert.group(1) for a in _CLIENT_CERT_ALERTS) else "")
    for pattern in (r"\[Errno -?\d+\] ([^'\")\]]+)", r"(Connection refused)", r"(timed out)"):
        match = re.search(pattern, text)
        if match:
            return match.group(1).strip()
    return type(err).__name__


def _raise_for_status(response: requests.Response, operation: str, path: str) -> None:
    status = response.status_code
    if status < 400 or status in _PASS_THROUGH or (status == 409 and path == "/v1/txn"):
        return
    body = response.content.decode("utf-8", "replace").strip()[:300]
    if status in (401, 403):
        raise ConsulRefused(
            f"permission denied ({body or 'no reason given'}); check the ACL token's policy",
            operation=operation,
            status=status,
        )
    if status == 500 and "leader" in body.lower():
        raise ConsulUnavailable(f"Consul has no cluster leader ({body})", operation=operation, status=status)
    if status == 413 and path == "/v1/txn":
        match = re.search(r"\((\d+) > (\d+)\)", body)
        if match:
            raise TxnTooLarge(body, int(match.group(2)))
    if status == 429:
        raise ConsulUnavailable(f"Consul is rate-limiting this client ({body})", operation=operation, status=status)
    raise ConsulRequestError(body or response.reason or "error", operation=operation, status=status)


class _PyConsul(consul.std.Consul):  # type: ignore[misc]
    def __init__(self, endpoint: Endpoint, settings: ConsulSettings, token: str | None) -> None:
        self._endpoint = endpoint
        self._settings = settings
        self._token_value = token
        super().__init__(
            host=endpoint.host,
            port=endpoint.port,
            token=token,
            scheme="http",
            dc=settings.datacenter,
            verify=settings.verify(),
            cert=settings.client_certificate(),
            connections_timeout=settings.timeout,
        )
        self.token = token  # py-consul lets CONSUL_HTTP_TOKEN beat an explicit token: our settings decided already

    def http_connect(self, host: str, port: int, scheme: str, verify: Any = True, cert: Any = None) -> _HTTPClient:
        return _HTTPClient(self._endpoint, self._settings, self._token_value)


def _json(response: Any) -> Any:
    if response.code == 404:
        return None
    return json.loads(response.body) if response.body else None


def _identity(response: Any) -> Any:
    return response


class ConsulClient:
    """Typed access to the parts of Consul's HTTP API this project uses. Thread-safe (one requests session)."""

    def __init__(self, settings: ConsulSettings) -> None:
        self.settings = settings
        self.endpoint = settings.endpoint()
        self._consul = _PyConsul(self.endpoint, settings, settings.resolved_token())
        self._http: _HTTPClient = self._consul.http
        self._op_limit: int | None = None
        self._version: str | None = None

    @classmethod
    def from_env(cls, **flags: Any) -> ConsulClient:
        return cls(ConsulSettings.from_sources(flags))

    @property
    def raw(self) -> Any:
        """The py-consul ``consul.Consul`` client on this adapter's HTTP layer."""
        return self._consul

    @property
    def address(self) -> str:
        return self.endpoint.url

    @property
    def datacenter(self) -> str | None:
        return self.settings.datacenter

    def request_counts(self) -> dict[str, int]:
        """Requests sent so far, by HTTP method."""
        return dict(self._http.requests)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ConsulClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------------------------

    def call(
        self, method: str, path: str, params: Iterable[tuple[str, Any]] | None = None, data: str | bytes | None = None
    ) -> tuple[int, Mapping[str, str], Any]:
        """One request; returns (status, headers, parsed JSON or None). Errors are already mapped."""
        sender = {"GET": self._http.get, "PUT": self._http.put, "DELETE": self._http.delete}[method]
        args: dict[str, Any] = {"params": list(params or [])}
        if method != "GET":
            args["data"] = data if data is not None else ""
        response = sender(_identity, path, **args)
        return response.code, response.headers, _json(response)

    def _dc(self, datacenter: str | None) -> list[tuple[str, str]]:
        dc = datacenter or self.settings.datacenter
        return [("dc", dc)] if dc else []

    # -- agent ------------------------------------------------------------------------------------------------

    def agent_self(self) -> dict[str, Any]:
        _, _, body = self.call("GET", "/v1/agent/self")
        return dict(body or {})

    def version(self) -> str:
        if self._version is None:
            self._version = str(self.agent_self().get("Config", {}).get("Version", "0"))
        return self._version

    def op_limit(self) -> int:
        """The most operations one transaction may hold on this cluster (64 before Consul 1.14, 128 after)."""
        if self._op_limit is None:
            numbers = [int(n) for n in re.findall(r"\d+", self.version())[:2]] + [0, 0]
            self._op_limit = 128 if (numbers[0], numbers[1]) >= (1, 14) else 64
        return self._op_limit

    def agent_services(self, filter_expr: str | None = None) -> dict[str, dict[str, Any]]:
        params = [("filter", filter_expr)] if filter_expr else []
        _, _, body = self.call("GET", "/v1/agent/services", params)
        return dict(body or {})

    def agent_checks(self, filter_expr: str | None = None) -> dict[str, dict[str, Any]]:
        params = [("filter", filter_expr)] if filter_expr else []
        _, _, body = self.call("GET", "/v1/agent/checks", params)
        return dict(body or {})

    def register_service(self, payload: Mapping[str, Any]) -> None:
        self.call("PUT", "/v1/agent/service/register", [("replace-existing-checks", "true")], json.dumps(payload))

    def deregister_service(self, service_id: str) -> None:
        self.call("PUT", f"/v1/agent/service/deregister/{service_id}")

    def update_ttl(self, check_id: str, status: str, output: str = "") -> None:
        """Report a TTL check's status: ``passing``, ``warning`` or ``critical``."""
        body = json.dumps({"Status": status, "Output": output[:4096]})
        self.call("PUT", f"/v1/agent/check/update/{check_id}", data=body)

    # -- status, catalog, health ------------------------------------------------------------------------------

    def leader(self) -> str:
        _, _, body = self.call("GET", "/v1/status/leader")
        return str(body or "")

    def datacenters(self) -> list[str]:
        _, _, body = self.call("GET", "/v1/catalog/datacenters")
        return list(body or [])

    def health_service(
        self,
        name: str,
        *,
        passing: bool = False,
        tags: Iterable[str] = (),
        datacenter: str | None = None,
        filter_expr: str | None = None,
        near: str | None = None,
        index: int | None = None,
        wait: str | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Instances of a service with their node and checks; ``index`` and ``wait`` make it a blocking query."""
        params: list[tuple[str, Any]] = [("tag", tag) for tag in tags]
        if passing:
            params.append(("passing", "1"))
        params += self._dc(datacenter)
        if filter_expr:
            params.append(("filter", filter_expr))
        if near:
            params.append(("near", near))
        if index is not None:
            params.append(("index", max(1, index)))
            if wait:
                params.append(("wait", wait))
        _, headers, body = self.call("GET", f"/v1/health/service/{name}", params)
        return int(headers.get("X-Consul-Index", "0") or 0), list(body or [])

    # -- KV ---------------------------------------------------------------------------------------------------

    def kv_get(
        self,
        key: str,
        *,
        recurse: bool = False,
        datacenter: str | None = None,
        index: int | None = None,
        wait: str | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Entries at ``key`` (or under it with ``recurse``), values decoded to bytes; ``[]`` when absent."""
        params: list[tuple[str, Any]] = self._dc(datacenter)
        if recurse:
            params.append(("recurse", "1"))
        if index is not None:
            params.append(("index", max(1, index)))
            if wait:
                params.append(("wait", wait))
        _, headers, body = self.call("GET", f"/v1/kv/{key}", params)
        entries = [_decoded(entry) for entry in (body or [])]
        return int(headers.get("X-Consul-Index", "0") or 0), entries

    def kv_put(
        self,
        key: str,
        value: bytes,
        *,
        flags: int | None = None,
        cas: int | None = None,
        acquire: str | None = None,
        release: str | None = None,
    ) -> bool:
        params: list[tuple[str, Any]] = []
        if flags is not None:
            params.append(("flags", flags))
        if cas is not None:
            params.append(("cas", cas))
        if acquire:
            params.append(("acquire", acquire))
        if release:
            params.append(("release", release))
        _, _, body = self.call("PUT", f"/v1/kv/{key}", params, value)
        return bool(body)

    def kv_delete(self, key: str, *, cas: int | None = None, recurse: bool = False) -> bool:
        params: list[tuple[str, Any]] = [("cas", cas)] if cas is not None else []
        if recurse:
            params.append(("recurse", "1"))
        _, _, body = self.call("DELETE", f"/v1/kv/{key}", params)
        return bool(body)

    def read_trees(self, prefixes: Iterable[str]) -> list[dict[str, Any]]:
        """Every entry under each prefix, in as few read-only transactions as the op limit allows (usually one)."""
        ops = [{"KV": {"Verb": "get-tree", "Key": prefix}} for prefix in dict.fromkeys(prefixes)]
        limit = self._op_limit or 64
        entries: list[dict[str, Any]] = []
        for start in range(0, len(ops), limit):
            for result in self.txn(ops[start : start + limit]):
                if "KV" in result:
                    entries.append(_decoded(result["KV"]))
        return entries

    def txn(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One transaction; returns its results. Raises :class:`TxnFailed` (409) or :class:`TxnTooLarge` (413)."""
        try:
            status, _, body = self.call("PUT", "/v1/txn", data=json.dumps(ops))
        except TxnTooLarge as err:
            self._op_limit = err.limit
            raise
        if status == 409:
            errors = [(int(e.get("OpIndex", -1)), str(e.get("What", ""))) for e in (body or {}).get("Errors") or []]
            raise TxnFailed(errors)
        return list((body or {}).get("Results") or [])

    # -- sessions -----------------------------------------------------------------------------------------------

    def session_create(self, name: str, ttl: str, *, lock_delay: str = "15s", behavior: str = "release") -> str:
        body = json.dumps({"Name": name, "TTL": ttl, "LockDelay": lock_delay, "Behavior": behavior})
        _, _, answer = self.call("PUT", "/v1/session/create", data=body)
        return str(answer["ID"])

    def session_renew(self, session_id: str) -> bool:
        status, _, body = self.call("PUT", f"/v1/session/renew/{session_id}")
        return status == 200 and bool(body)

    def session_destroy(self, session_id: str) -> None:
        self.call("PUT", f"/v1/session/destroy/{session_id}")


def _decoded(entry: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(entry)
    value = entry.get("Value")
    out["Value"] = base64.b64decode(value) if value else b""
    return out


def txn_op_size(key: str, value_length: int) -> int:
    """The bytes one KV operation adds to a transaction's body, at most: JSON framing (verb, flags, index), the key
    (escaped, up to 6 bytes a character) and the value, base64-encoded."""
    return 120 + 6 * len(key) + 4 * ((value_length + 2) // 3)
