"""Resolved dependencies as files: pure renderers (env, docker, json, yaml) and one atomic file writer.

The env format is ``KEY=value`` lines in name order. A value made only of characters no shell, systemd or docker
treats specially (letters, digits and ``@%+=:,./-_``: URLs, host:port pairs, numbers) is written bare, which all
three read the same way. Any other value is single-quoted the POSIX way (``'`` becomes ``'\\''``), which ``source``
and systemd's ``EnvironmentFile=`` read back exactly, but which ``docker --env-file`` would keep literally: for
docker, use the ``docker`` format (bare values; a value with a newline is refused, docker cannot carry it).

Files are replaced atomically: a temporary file in the same folder, written, fsynced, given the old file's mode
(or the requested one), renamed over the old one, and the folder fsynced. A file whose bytes would not change is
not touched at all. A reader never sees a partial or empty file. A symbolic link is followed (its target is
replaced, the link kept); a target that is not a regular file (``/dev/stdout``, a FIFO) is written to, never
replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

from manifest_runner.errors import OutputError
from manifest_runner.resolved import Resolved

FORMATS = ("env", "docker", "json", "yaml")
_BARE = re.compile(r"[A-Za-z0-9@%+=:,./_-]*")
HEADER = "# written by consul-manifest; do not edit: it is rewritten when a dependency changes\n"


def shell_quote(value: str) -> str:
    if _BARE.fullmatch(value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"


def render_env(resolved: Sequence[Resolved]) -> str:
    lines = [HEADER]
    for item in sorted(resolved, key=lambda r: r.name):
        if item.value is None:
            continue
        lines.append(f"# {item.name}: {_origin(item)}\n{item.name}={shell_quote(item.value)}\n")
    return "".join(lines)


def render_docker(resolved: Sequence[Resolved]) -> str:
    lines = [HEADER]
    for item in sorted(resolved, key=lambda r: r.name):
        if item.value is None:
            continue
        if "\n" in item.value or "\r" in item.value:
            raise OutputError(f"{item.name}: a value with a newline cannot go in a docker env file; use --format env")
        lines.append(f"# {item.name}: {_origin(item)}\n{item.name}={item.value}\n")
    return "".join(lines)


def document(resolved: Sequence[Resolved]) -> dict[str, object]:
    return {
        "generated_by": "consul-manifest",
        "dependencies": {item.name: item.to_json() for item in sorted(resolved, key=lambda r: r.name)},
    }


def render_json(resolved: Sequence[Resolved]) -> str:
    return json.dumps(document(resolved), indent=2, ensure_ascii=False) + "\n"


def render_yaml(resolved: Sequence[Resolved]) -> str:
    import io

    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    out = io.StringIO()
    yaml.dump(document(resolved), out)
    return out.getvalue()


def render(resolved: Sequence[Resolved], fmt: str) -> str:
    renderers = {"env": render_env, "docker": render_docker, "json": render_json, "yaml": render_yaml}
    if fmt not in renderers:
        raise OutputError(f"unknown output format {fmt!r}; one of {', '.join(FORMATS)}")
    return renderers[fmt](resolved)


def format_for(path: str | Path) -> str:
    """The format a file name asks for: .json, .yaml/.yml, else env."""
    suffix = Path(path).suffix.lower()
    return {".json": "json", ".yaml": "yaml", ".yml": "yaml"}.get(suffix, "env")


def _origin(item: Resolved) -> str:
    if item.source == "consul":
        where = f" {item.datacenter}" if item.datacenter else ""
        chosen = f" ({item.chosen.id})" if item.chosen is not None else ""
        return f"from consul{where}{chosen}"
    if item.source == "cache":
        return f"from the last known good value ({item.reason})"
    return f"{item.source} ({item.reason})" if item.reason else item.source


def write_atomic(path: str | Path, data: str | bytes, mode: int | None = None) -> bool:
    """Replace ``path`` with ``data`` atomically; return False (and touch nothing) when the bytes are the same.

    Raises :class:`OutputError` when it cannot; the previous file is then intact.
    """
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if target.is_symlink():
        target = Path(os.path.realpath(target))  # replace what the link points to, and keep the link
    try:
        kind = target.stat().st_mode
    except FileNotFoundError:
        kind = None
    except OSError as err:
        raise OutputError(f"cannot read {target}: {err.strerror or err}") from None
    if kind is not None and not stat.S_ISREG(kind):
        return _write_through(target, payload)  # /dev/stdout, a FIFO: never replaced by a regular file
    try:
        if target.read_bytes() == payload:
            return False
    except FileNotFoundError:
        pass
    except OSError as err:
        raise OutputError(f"cannot read {target}: {err.strerror or err}") from None
    folder = target.parent if str(target.parent) else Path()
    try:
        existing_mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        existing_mode = None
    import tempfile

    tmp_name: str | None = None
    try:
        handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        final_mode = existing_mode if existing_mode is not None else mode if mode is not None else 0o644 & ~_UMASK
        Path(tmp_name).chmod(final_mode)
        Path(tmp_name).replace(target)
        tmp_name = None
        _fsync_folder(folder)
    except OSError as err:
        raise OutputError(f"cannot write {target}: {err.strerror or err}; the previous file is unchanged") from None
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                Path(tmp_name).unlink()
    return True


def _write_through(target: Path, payload: bytes) -> bool:
    try:
        with target.open("wb") as stream:
            stream.write(payload)
    except OSError as err:
        raise OutputError(f"cannot write {target}: {err.strerror or err}") from None
    return True


def _read_umask() -> int:
    """The process umask, read without changing it where Linux allows (changing it is not thread-safe)."""
    with contextlib.suppress(OSError, ValueError), Path("/proc/self/status").open(encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    current = os.umask(0o022)
    os.umask(current)
    return current


_UMASK = _read_umask()


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
