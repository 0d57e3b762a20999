"""Typed configuration in Consul's KV store for ``ConsulRegistry``: what is set is what is read back."""

from __future__ import annotations

from typing import Any

from manifest_runner.consul import kvcodec
from manifest_runner.consul.client import ConsulClient
from manifest_runner.errors import ConsulError, ConsulUnavailable

_UNSET: Any = object()


class ConfigStore:
    """Mixed into :class:`~manifest_runner.library.registry.ConsulRegistry`: values under ``config_prefix``."""

    client: ConsulClient
    config_prefix: str

    def _down(self, err: ConsulError) -> None:
        raise NotImplementedError

    def _up(self) -> None:
        raise NotImplementedError

    def _guard(self) -> None:
        raise NotImplementedError

    def _key(self, key: str) -> str:
        return self.config_prefix + key.lstrip("/")

    def set_config(self, key: str, value: Any) -> bool:
        """Store a value under this service's prefix; its type is kept (``"5432"`` stays a string)."""
        data, flags = kvcodec.encode(value)
        if not self.client.kv_put(self._key(key), data, flags=flags):
            raise ConsulError(f"Consul did not store {self._key(key)}", operation=f"PUT /v1/kv/{self._key(key)}")
        return True

    def get_config(self, key: str, default: Any = _UNSET) -> Any:
        """The value as it was set, or ``default`` (None if not given) when absent. When Consul is away, an
        explicit ``default`` is returned (logged); without one, ConsulUnavailable is raised."""
        try:
            self._guard()
            _, entries = self.client.kv_get(self._key(key))
        except ConsulUnavailable as err:
            self._down(err)
            if default is _UNSET:
                raise
            return default
        self._up()
        if not entries:
            return None if default is _UNSET else default
        return kvcodec.decode(entries[0].value, entries[0].flags)

    def get_all_config(self, prefix: str = "") -> dict[str, Any]:
        """Every value under this service's prefix (and ``prefix`` within it), keyed relative to the service's
        prefix: ``get_all_config("database/")`` -> ``{"database/url": ..., "database/pool_size": 20}``."""
        _, entries = self.client.kv_get(self._key(prefix), recurse=True)
        return {
            entry.key[len(self.config_prefix) :]: kvcodec.decode(entry.value, entry.flags)
            for entry in entries
            if not entry.key.endswith("/")
        }

    def delete_config(self, key: str) -> bool:
        return self.client.kv_delete(self._key(key))
