"""Connection settings on Consul's own environment contract, so existing set-ups just work.

``CONSUL_HTTP_ADDR`` (``host:port``, ``http://``, ``https://``, ``unix:///path``), ``CONSUL_HTTP_TOKEN``,
``CONSUL_HTTP_TOKEN_FILE``, ``CONSUL_HTTP_SSL``, ``CONSUL_HTTP_SSL_VERIFY``, ``CONSUL_CACERT``, ``CONSUL_CAPATH``,
``CONSUL_CLIENT_CERT``, ``CONSUL_CLIENT_KEY``, ``CONSUL_TLS_SERVER_NAME``, and our ``CONSUL_DATACENTER`` and
``CONSUL_MANIFEST_TIMEOUT``.

Precedence: a flag beats the environment, which beats the default. Between a token and a token file given at the
same level, the file wins, as in Consul's Go client. Tokens are ``SecretStr``: they print as ``**********``.

Two classes, one set of fields: :class:`ConsulConfig`, a pydantic model that :meth:`ConsulConfig.from_sources`
fills from flags and the environment, is what the command line and the adapter use; :class:`ConsulSettings`
(``manifest_runner.config_env``) is the same model as a pydantic-settings ``BaseSettings``, for library users who
want ``ConsulSettings()`` to read the environment (or a ``.env`` file) the pydantic-settings way. The split is
measured: importing pydantic-settings costs ~100 ms, a fifth of ``consul-manifest render`` at a container's boot
(bench/render.py), and the command line needs none of its features.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from manifest_runner.errors import SettingsError
from manifest_runner.util import secrets

DEFAULT_ADDR = "http://127.0.0.1:8500"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the agent's HTTP API is: a TCP host and port, or a unix socket."""

    scheme: Literal["http", "https", "unix"]
    host: str = "127.0.0.1"
    port: int = 8500
    socket_path: str | None = None

    @property
    def url(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.socket_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


TENANCY_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
"""A namespace or partition name, as Consul Enterprise takes them."""


class ConsulConfig(BaseModel):
    """How to reach and authenticate to Consul. Build with :meth:`from_sources` to honour flag precedence."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, hide_input_in_errors=True)

    http_addr: str = Field(DEFAULT_ADDR, validation_alias="CONSUL_HTTP_ADDR")
    """``host:port``, ``http://host:port``, ``https://host:port`` or ``unix:///path/to/socket``."""
    token: SecretStr | None = Field(None, validation_alias="CONSUL_HTTP_TOKEN")
    """ACL token, sent only as the ``X-Consul-Token`` header."""
    token_file: Path | None = Field(None, validation_alias="CONSUL_HTTP_TOKEN_FILE")
    """A file holding the ACL token (wins over ``token`` given at the same level)."""
    http_ssl: bool | None = Field(None, validation_alias="CONSUL_HTTP_SSL")
    """Use HTTPS even when the address has no scheme (and never downgrade an https:// address)."""
    ssl_verify: bool = Field(True, validation_alias="CONSUL_HTTP_SSL_VERIFY")
    """Verify the server certificate."""
    cacert: Path | None = Field(None, validation_alias="CONSUL_CACERT")
    """A CA bundle file to verify the server with."""
    capath: Path | None = Field(None, validation_alias="CONSUL_CAPATH")
    """A folder of CA certificates (hashed names, as ``c_rehash`` makes them)."""
    client_cert: Path | None = Field(None, validation_alias="CONSUL_CLIENT_CERT")
    """Client certificate for mutual TLS."""
    client_key: Path | None = Field(None, validation_alias="CONSUL_CLIENT_KEY")
    """Client key for mutual TLS."""
    tls_server_name: str | None = Field(None, validation_alias="CONSUL_TLS_SERVER_NAME")
    """The name to verify the server certificate against (SNI), when it differs from the address."""
    datacenter: str | None = Field(None, validation_alias="CONSUL_DATACENTER")
    """Datacenter for requests; default: the agent's own."""
    namespace: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", validation_alias="CONSUL_NAMESPACE"
    )
    """Consul Enterprise namespace for requests. Consul without namespaces ignores the parameter, so a value other
    than ``default`` is refused there instead of writing to the default namespace."""
    partition: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", validation_alias="CONSUL_PARTITION"
    )
    """Consul Enterprise admin partition for requests (refused, like a namespace, where there are none)."""
    timeout: float = Field(5.0, gt=0, le=600, validation_alias="CONSUL_MANIFEST_TIMEOUT")
    """Seconds a single request may take (connect plus answer); blocking queries add their wait time."""
    watch_connections: int | None = Field(None, ge=1, le=1000, validation_alias="CONSUL_MANIFEST_WATCH_CONNECTIONS")
    """The most connections the watches of one process hold (default 48, and never over a quarter of the agent's
    ``limits.http_max_conns_per_client`` when the agent says it)."""

    @classmethod
    def from_sources(
        cls, flags: dict[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> ConsulConfig:
        """Flags (given values only, ``None`` meaning "not given") over the environment (default: the process's)
        over the defaults."""
        given = {k: v for k, v in (flags or {}).items() if v is not None}
        if "token" in given or "token_file" in given:
            given.setdefault("token", None)  # a flag token beats an environment token file, and vice versa
            given.setdefault("token_file", None)
        try:
            return cls._from_mapping(os.environ if environ is None else environ, given)
        except ValidationError as err:
            raise SettingsError(_settings_message(err)) from None

    @classmethod
    def _from_mapping(cls, environ: Mapping[str, str], given: dict[str, Any]) -> ConsulConfig:
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, str) and alias in environ:
                values[name] = environ[alias]
        values.update(given)
        return cls.model_validate(values)

    def endpoint(self) -> Endpoint:
        """Parse ``http_addr`` the way Consul's Go client does; raise :class:`SettingsError` when it cannot."""
        raw = self.http_addr.strip()
        ssl = bool(self.http_ssl)
        if raw.startswith("unix://"):
            path = raw.removeprefix("unix://")
            if not path:
                raise SettingsError(f"CONSUL_HTTP_ADDR {raw!r}: a unix address needs a socket path")
            return Endpoint("unix", socket_path=path)
        scheme: Literal["http", "https"] = "https" if ssl else "http"
        rest = raw
        if "://" in raw:
            given_scheme, rest = raw.split("://", 1)
            if given_scheme not in ("http", "https"):
                raise SettingsError(f"CONSUL_HTTP_ADDR {raw!r}: scheme must be http, https or unix")
            if given_scheme == "https":
                scheme = "https"
        try:
            parts = urlsplit(f"//{rest}")
            host = parts.hostname
            port = parts.port
        except ValueError:
            host, port = None, None
        if not host or parts.path not in ("", "/"):
            raise SettingsError(f"CONSUL_HTTP_ADDR {raw!r} is not host:port, scheme://host:port or unix:///path")
        return Endpoint(scheme, host, port or (443 if scheme == "https" else 80))

    def resolved_token(self) -> str | None:
        """The token to send: the token file's content if one is set, else the token; checked by
        :func:`clean_token`, registered so that it is redacted from anything printed, never logged."""
        if self.token_file is not None:
            try:
                with self.token_file.open("rb") as handle:
                    raw = handle.read(TOKEN_FILE_LIMIT + 1)
                content = raw.decode("utf-8")
            except OSError as err:
                raise SettingsError(
                    f"cannot read the token file {self.token_file}: {err.strerror or type(err).__name__}"
                ) from None
            except UnicodeDecodeError:
                raise SettingsError(f"the token file {self.token_file} is not UTF-8 text") from None
            if len(raw) > TOKEN_FILE_LIMIT:
                raise SettingsError(f"the token file {self.token_file} is larger than a token can be")
            token = clean_token(content, f"the token file {self.token_file}")
            if token:
                return token
        if self.token is not None:
            return clean_token(self.token.get_secret_value(), "CONSUL_HTTP_TOKEN (or --token)")
        return None

    def verify(self) -> bool | str:
        """What ``requests`` takes for ``verify``: False, a CA file or folder, or True."""
        if not self.ssl_verify:
            return False
        if self.cacert is not None:
            return _readable(self.cacert, "CONSUL_CACERT (--ca-file)", folder=False)
        if self.capath is not None:
            return _readable(self.capath, "CONSUL_CAPATH (--ca-path)", folder=True)
        return True

    def client_certificate(self) -> tuple[str, str] | str | None:
        if self.client_cert is None:
            return None
        cert = _readable(self.client_cert, "CONSUL_CLIENT_CERT (--client-cert)", folder=False)
        if self.client_key is None:
            return cert
        return (cert, _readable(self.client_key, "CONSUL_CLIENT_KEY (--client-key)", folder=False))


TOKEN_FILE_LIMIT = 64 * 1024


def clean_token(raw: str, source: str) -> str | None:
    """The one place a token is checked. Surrounding whitespace is removed, as Consul's own CLI does for token files
    (a secret written with ``echo`` ends with a newline); anything else that cannot be sent in an HTTP header is
    refused with a message naming ``source``, never the token. Empty means no token."""
    token = raw.strip()
    if not token:
        return None
    for position, ch in enumerate(token, start=1):
        if not 0x21 <= ord(ch) <= 0x7E:
            kind = "a space or control character" if ord(ch) < 0x80 else "a non-ASCII character"
            raise SettingsError(
                f"the ACL token from {source} holds {kind} (character {position} of {len(token)}), which cannot be "
                "sent in an HTTP header; check how the token was written"
            )
    secrets.register(token)
    return token


def _readable(path: Path, what: str, *, folder: bool) -> str:
    if folder and not path.is_dir():
        raise SettingsError(f"{what}: {path} is not a folder")
    if not folder and not path.is_file():
        raise SettingsError(f"{what}: {path} is not a readable file")
    if not os.access(path, os.R_OK):
        raise SettingsError(f"{what}: {path} cannot be read by this user")
    return str(path)


def _settings_message(err: ValidationError) -> str:
    parts = []
    for item in err.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in item["loc"])
        alias = ConsulConfig.model_fields[field].validation_alias if field in ConsulConfig.model_fields else None
        parts.append(f"{alias or field}: {item['msg']}")
    return "invalid settings: " + "; ".join(parts)
