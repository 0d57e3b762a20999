"""consul-manifest: declarative service manifests for HashiCorp Consul."""

from manifest_runner._version import __version__

__all__ = ["__version__"]
