"""consul-manifest: declarative service manifests for HashiCorp Consul.

The public API is what ``__all__`` lists. Names are imported on first use (PEP 562), so that ``import
manifest_runner`` and the ``consul-manifest`` command start fast: containers call ``render`` at boot.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from manifest_runner._version import __version__

if TYPE_CHECKING:
    from manifest_runner.config import ConsulConfig
    from manifest_runner.config_env import ConsulSettings
    from manifest_runner.errors import (
        ApplyFailed,
        ConsulError,
        ConsulRefused,
        ConsulRequestError,
        ConsulUnavailable,
        LockTimeout,
        ManifestError,
        ManifestRunnerError,
        OutputError,
        Problem,
        ResolveError,
        SettingsError,
    )
    from manifest_runner.library.election import Election
    from manifest_runner.library.pyconsul import py_consul
    from manifest_runner.library.registry import ConsulRegistry, ServiceNotFound
    from manifest_runner.manifest.loader import LoadedManifest, ManifestSet, load_manifests
    from manifest_runner.manifest.model import Manifest

_LAZY = {
    "ApplyFailed": "manifest_runner.errors",
    "ConsulRegistry": "manifest_runner.library.registry",
    "Election": "manifest_runner.library.election",
    "ServiceNotFound": "manifest_runner.library.registry",
    "ConsulError": "manifest_runner.errors",
    "ConsulRefused": "manifest_runner.errors",
    "ConsulRequestError": "manifest_runner.errors",
    "ConsulConfig": "manifest_runner.config",
    "ConsulSettings": "manifest_runner.config_env",
    "ConsulUnavailable": "manifest_runner.errors",
    "LoadedManifest": "manifest_runner.manifest.loader",
    "LockTimeout": "manifest_runner.errors",
    "Manifest": "manifest_runner.manifest.model",
    "ManifestError": "manifest_runner.errors",
    "ManifestRunnerError": "manifest_runner.errors",
    "ManifestSet": "manifest_runner.manifest.loader",
    "OutputError": "manifest_runner.errors",
    "Problem": "manifest_runner.errors",
    "ResolveError": "manifest_runner.errors",
    "SettingsError": "manifest_runner.errors",
    "load_manifests": "manifest_runner.manifest.loader",
    "py_consul": "manifest_runner.library.pyconsul",
}

__all__ = [
    "ApplyFailed",
    "ConsulConfig",
    "ConsulError",
    "ConsulRefused",
    "ConsulRegistry",
    "ConsulRequestError",
    "ConsulSettings",
    "ConsulUnavailable",
    "Election",
    "LoadedManifest",
    "LockTimeout",
    "Manifest",
    "ManifestError",
    "ManifestRunnerError",
    "ManifestSet",
    "OutputError",
    "Problem",
    "ResolveError",
    "ServiceNotFound",
    "SettingsError",
    "__version__",
    "load_manifests",
    "py_consul",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'manifest_runner' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
