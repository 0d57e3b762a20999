"""``py_consul(**options)``: a genuine py-consul ``consul.Consul`` on this project's transport, for given options.

The same options as the command line's connection settings, and the same environment contract (``CONSUL_HTTP_ADDR``,
``CONSUL_HTTP_TOKEN``, ``CONSUL_HTTP_TOKEN_FILE``, the TLS variables... fill what is not given); ``timeout`` has
py-consul's meaning (its ``connections_timeout``: 30 s by default, a blocking query's wait added, ``None`` for none).
py-consul raises its own exceptions for Consul's answers, as with its own client::

    from manifest_runner import py_consul
    c = py_consul(http_addr="127.0.0.1:8500", token_file="/run/secrets/consul-token")
    index, services = c.catalog.services()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from manifest_runner.config import ConsulConfig
from manifest_runner.consul.client import ConsulClient
from manifest_runner.consul.pyconsul import DEFAULT_TIMEOUT, facade


def py_consul(
    *,
    http_addr: str | None = None,
    token: str | None = None,
    token_file: str | Path | None = None,
    datacenter: str | None = None,
    cacert: str | Path | None = None,
    capath: str | Path | None = None,
    client_cert: str | Path | None = None,
    client_key: str | Path | None = None,
    tls_server_name: str | None = None,
    namespace: str | None = None,
    partition: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    consistency: str = "default",
) -> Any:
    """A ``consul.Consul`` whose requests go through this project's transport (see the module's description)."""
    flags: dict[str, Any] = {
        "http_addr": http_addr,
        "token": token,
        "token_file": token_file,
        "datacenter": datacenter,
        "cacert": cacert,
        "capath": capath,
        "client_cert": client_cert,
        "client_key": client_key,
        "tls_server_name": tls_server_name,
        "namespace": namespace,
        "partition": partition,
    }
    settings = ConsulConfig.from_sources({k: v for k, v in flags.items() if v is not None})
    client = ConsulClient(settings)
    return facade(client, settings.datacenter, connections_timeout=timeout, consistency=consistency)
