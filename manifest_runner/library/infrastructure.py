"""The seven infrastructure helpers of ``ConsulRegistry``: conventional service names, URL formats and local
defaults for NATS, Redis, Loki, MinIO, DuckDB, PostgreSQL and Qdrant."""

from __future__ import annotations

from collections.abc import Sequence

#: service name, URL format and conventional local default of each infrastructure helper
INFRASTRUCTURE: dict[str, tuple[str, str, str]] = {
    "nats": ("nats", "nats://{address}:{port}", "nats://localhost:4222"),
    "redis": ("redis", "redis://{address}:{port}", "redis://localhost:6379"),
    "loki": ("loki", "http://{address}:{port}", "http://localhost:3100"),
    "minio": ("minio", "{address}:{port}", "localhost:9000"),
    "duckdb": ("duckdb", "{address}:{port}", "localhost:50052"),
    "postgres": ("postgres", "postgresql://{address}:{port}", "postgresql://localhost:5432"),
    "qdrant": ("qdrant", "http://{address}:{port}", "http://localhost:6333"),
}


class InfrastructureHelpers:
    """Mixed into :class:`~manifest_runner.library.registry.ConsulRegistry`, which provides ``_endpoint``."""

    infrastructure: dict[str, str]

    def _endpoint(
        self,
        name: str,
        strategy: str,
        fallback_url: str | None,
        tag: str | None,
        datacenters: Sequence[str | None],
        template: str = "{address}:{port}",
    ) -> str:
        raise NotImplementedError

    def _infrastructure(self, kind: str, service_name: str | None, fallback_url: str | None) -> str:
        default_name, template, default_url = INFRASTRUCTURE[kind]
        name = service_name or self.infrastructure.get(kind, default_name)
        fallback = default_url if fallback_url is None else fallback_url
        return self._endpoint(name, "health_weighted", fallback, None, [None], template)

    def get_nats_url(self, service_name: str | None = None, fallback_url: str | None = None) -> str:
        return self._infrastructure("nats", service_name, fallback_url)

    def get_redis_url(self, service_name: str | None = None, fallback_url: str | None = None) -> str:
        return self._infrastructure("redis", service_name, fallback_url)

    def get_loki_url(self, service_name: str | None = None, fallback_url: str | None = None) -> str:
        return self._infrastructure("loki", service_name, fallback_url)

    def get_minio_endpoint(self, service_name: str | None = None, fallback_url: str | None = None) -> str:
        return self._infrastructure("minio", service_name, fallback_url)

    def get_duckdb_url(self, service_name: str | None = None, fallback_url: str | None = None) -> str:
        return self._infrastructure("duckdb", service_name, fallback_url)

    def get_postgres_url(self, service_name: str | None = None, fallback_url: str | None = None) -> str:
        return self._infrastructure("postgres", service_name, fallback_url)

    def get_qdrant_url(self, service_name: str | None = None, fallback_url: str | None = None) -> str:
        return self._infrastructure("qdrant", service_name, fallback_url)
