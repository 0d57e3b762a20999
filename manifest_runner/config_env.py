"""``ConsulSettings``: the connection settings as a pydantic-settings ``BaseSettings``.

The same fields, validation and methods as :class:`~manifest_runner.config.ConsulConfig` (Consul's own
``CONSUL_*`` environment contract), read the pydantic-settings way: ``ConsulSettings()`` takes the process
environment, ``ConsulSettings(_env_file=".env")`` a dotenv file too. The command line does not import this module
(see :mod:`manifest_runner.config` for why); ``ConsulRegistry(settings=ConsulSettings())`` accepts it.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from manifest_runner.config import ConsulConfig


class ConsulSettings(ConsulConfig, BaseSettings):
    """Connection settings read from the environment by pydantic-settings (flags: pass them as arguments)."""

    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", populate_by_name=True, case_sensitive=True, hide_input_in_errors=True
    )
