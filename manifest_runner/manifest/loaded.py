"""Loaded manifests: one valid file with its owner, and the set given on the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from manifest_runner.manifest.locations import Positions
from manifest_runner.manifest.model import Manifest
from manifest_runner.manifest.parse import positions_of


@dataclass(frozen=True)
class LoadedManifest:
    """One valid manifest file with what later stages need: its owner and where its parts stand."""

    file: Path
    manifest: Manifest
    owner: str
    text: str = field(default="", repr=False, compare=False)
    _cache: dict[str, Positions] = field(default_factory=dict, repr=False, compare=False)

    @property
    def positions(self) -> Positions:
        """Where each part stands, worked out on first use (a valid manifest seldom needs it)."""
        if "positions" not in self._cache:
            self._cache["positions"] = positions_of(self.text, str(self.file))
        return self._cache["positions"]

    @property
    def folder(self) -> Path:
        """Relative output paths are resolved against the manifest's own folder."""
        return self.file.parent


@dataclass(frozen=True, slots=True)
class ManifestSet:
    """Every manifest given on the command line (files and folders), validated together."""

    manifests: tuple[LoadedManifest, ...]

    @property
    def owners(self) -> tuple[str, ...]:
        return tuple(sorted({m.owner for m in self.manifests}))

    def of_owner(self, owner: str) -> tuple[LoadedManifest, ...]:
        return tuple(m for m in self.manifests if m.owner == owner)

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(m.file for m in self.manifests)
