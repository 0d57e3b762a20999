"""Resolved dependencies as text: pure renderers for env, docker, json and yaml files.

The env format is ``KEY=value`` lines in name order, each after a comment saying where its value came from; texts
from Consul in that comment (an instance id, a datacenter, an error) are escaped by ``util.text.printable``, so
none can start a line of its own. A value made only of characters no shell, systemd or docker
treats specially (letters, digits and ``@%+=:,./-_``: URLs, host:port pairs, numbers) is written bare, which all
three read the same way. Any other value is single-quoted the POSIX way (``'`` becomes ``'\\''``), which ``source``
and systemd's ``EnvironmentFile=`` read back exactly, but which ``docker --env-file`` would keep literally: for
docker, use the ``docker`` format (bare values; a value with a newline is refused, docker cannot carry it).

Pure: the files themselves are written by :mod:`.writer`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from manifest_runner.errors import OutputError
from manifest_runner.resolve.result import Resolved
from manifest_runner.util.text import printable

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
        lines.append(f"# {item.name}: {printable(_origin(item), 500)}\n{item.name}={shell_quote(item.value)}\n")
    return "".join(lines)


def render_docker(resolved: Sequence[Resolved]) -> str:
    lines = [HEADER]
    for item in sorted(resolved, key=lambda r: r.name):
        if item.value is None:
            continue
        if "\n" in item.value or "\r" in item.value:
            raise OutputError(f"{item.name}: a value with a newline cannot go in a docker env file; use --format env")
        lines.append(f"# {item.name}: {printable(_origin(item), 500)}\n{item.name}={item.value}\n")
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
        failover = f"; failed over: {item.reason}" if item.reason else ""
        return f"from consul{where}{chosen}{failover}"
    if item.source == "cache":
        return f"from the last known good value ({item.reason})"
    return f"{item.source} ({item.reason})" if item.reason else item.source
