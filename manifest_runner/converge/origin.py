"""Where manifests come from: the git repository they are in (its ``origin`` remote) and their folder in it.

Two repositories that both have a ``consul.yaml`` with the same owner must not silently share it: the first apply
records its origin in the owner's record, and an apply from another origin is a conflict. The remote is read from
the repository's own ``config`` file (no ``git`` command is run), credentials are dropped from it (a CI checkout's
URL may carry a token), and ``https://host/org/repo.git`` and ``git@host:org/repo`` name the same repository.
Outside a repository, or in one without an ``origin`` remote, the origin is unknown and nothing is compared.
"""

from __future__ import annotations

import configparser
import hashlib
import re
from pathlib import Path

from manifest_runner.converge.ownership import Origin

MAX_CONFIG_BYTES = 1024 * 1024


def find_origin(manifest_file: Path) -> Origin | None:
    """The origin of a manifest file, or None when it is not in a git repository with an ``origin`` remote."""
    folder = manifest_file.resolve().parent
    for root in (folder, *folder.parents):
        config = _git_config(root)
        if config is None:
            continue
        url = _remote_url(config)
        if url is None:
            return None
        relative = folder.relative_to(root).as_posix()
        return Origin(normalise_remote(url), "" if relative == "." else relative)
    return None


def repo_digest(origin: Origin) -> str:
    """A short, path-safe name for a repository (the key under which its owners are indexed)."""
    return hashlib.sha256(origin.repo.encode()).hexdigest()[:16]


def normalise_remote(url: str) -> str:
    """``https://user:token@Host/org/repo.git`` and ``git@host:org/repo`` -> ``host/org/repo``."""
    text = url.strip()
    scp = re.fullmatch(r"(?:[^@/]+@)?([^:/]+):(?!//)(.+)", text)
    if scp and "://" not in text:
        host, path = scp.group(1), scp.group(2)
    else:
        text = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", text)
        text = text.split("@", 1)[1] if "@" in text.split("/", 1)[0] else text
        host, _, path = text.partition("/")
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host  # a port
    path = path.strip("/").removesuffix(".git")
    return f"{host.lower()}/{path}" if path else host.lower()


def _git_config(root: Path) -> Path | None:
    """The config file of the repository whose work tree is ``root`` (a worktree or submodule points elsewhere)."""
    git = root / ".git"
    if git.is_dir():
        return git / "config"
    if git.is_file():
        try:
            line = git.read_text(encoding="utf-8", errors="replace")[:4096]
        except OSError:
            return None
        if not line.startswith("gitdir:"):
            return None
        gitdir = (root / line.removeprefix("gitdir:").strip()).resolve()
        common = gitdir / "commondir"
        if common.is_file():
            try:
                gitdir = (gitdir / common.read_text(encoding="utf-8").strip()).resolve()
            except OSError:
                return None
        return gitdir / "config"
    return None


def _remote_url(config: Path) -> str | None:
    try:
        with config.open(encoding="utf-8", errors="replace") as handle:
            text = handle.read(MAX_CONFIG_BYTES)
    except OSError:
        return None
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        return None
    section = 'remote "origin"'
    return parser.get(section, "url", fallback=None) if parser.has_section(section) else None
