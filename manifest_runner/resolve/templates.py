"""Templates rendered with Consul's data, as consul-template does (the environment and validation are in
:mod:`manifest_runner.manifest.templating`).

Whatever a template reads is recorded as it reads it (:class:`Call`): ``run`` watches exactly those, so a template
is rendered again on the changes that can alter it and on no other. Missing data follows the dependency rules:
when Consul cannot answer a read, the answer it gave last time (kept on disk with the other last known good values)
is used; when it answers "no such key", ``key()`` fails the render (``key_or_default`` does not) and the file is
left as it is. A file is replaced atomically and only when its bytes change; its ``command`` then runs once, with a
timeout, and its exit code is logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from manifest_runner.consul import kvcodec
from manifest_runner.consul.base import LEADER, Freshness
from manifest_runner.consul.client import ConsulClient
from manifest_runner.errors import ConsulError, OutputError
from manifest_runner.manifest.model import Template
from manifest_runner.manifest.templating import environment, read_template
from manifest_runner.resolve.writer import write_atomic
from manifest_runner.util.durations import parse_duration
from manifest_runner.util.text import printable

log = logging.getLogger("consul_manifest.templates")

MAX_CACHE_BYTES = 16 * 1024 * 1024


class TemplateFailed(Exception):
    """A template could not be rendered: its file is left as it is."""


@dataclass(frozen=True, order=True)
class Call:
    """One read a template made: the watch it needs, and the key of its last known good answer."""

    kind: str
    """``service``, ``services``, ``key``, ``tree`` (``ls`` reads a tree)."""
    name: str
    datacenter: str | None = None
    tag: str | None = None
    near: str | None = None
    include_warning: bool = False

    def key(self) -> str:
        return json.dumps([self.kind, self.name, self.datacenter, self.tag, self.near, self.include_warning])


@dataclass
class TemplateData:
    """The reads of templates, recorded, with the answers kept as last known good values."""

    client: ConsulClient | None
    freshness: Freshness = LEADER
    remembered: dict[str, Any] = field(default_factory=dict)
    calls: set[Call] = field(default_factory=set)
    fallbacks: list[str] = field(default_factory=list)

    def fetch(self, call: Call) -> Any:
        self.calls.add(call)
        try:
            value = self._ask(call)
        except ConsulError as err:
            if call.key() in self.remembered:
                self.fallbacks.append(f"{call.kind}({call.name!r}): the last known good answer ({err})")
                return self.remembered[call.key()]
            raise TemplateFailed(
                f"{call.kind}({call.name!r}): Consul could not answer ({err}) and there is no last known good answer"
            ) from None
        self.remembered[call.key()] = value
        return value

    def _ask(self, call: Call) -> Any:
        client = self.client
        if client is None:
            raise ConsulError("Consul was not asked (--offline)")
        if call.kind == "service":
            _, found = client.health_service(
                call.name,
                passing=not call.include_warning,
                tags=[call.tag] if call.tag else [],
                datacenter=call.datacenter,
                near=call.near,
                freshness=self.freshness,
            )
            return [_instance(i.to_json(), i.weight) for i in found if i.status != "critical"]
        if call.kind == "services":
            _, names = client.catalog_services(datacenter=call.datacenter)
            return [{"name": name, "tags": sorted(tags)} for name, tags in sorted(names.items())]
        recurse = call.kind == "tree"
        _, entries = client.kv_get(call.name, recurse=recurse, datacenter=call.datacenter, freshness=self.freshness)
        if not recurse:
            return _text(entries[0].value, entries[0].flags) if entries else None
        return [
            {"key": e.key[len(call.name) :], "value": _text(e.value, e.flags)}
            for e in entries
            if not e.key.endswith("/")
        ]


def _instance(fields: dict[str, Any], weight: int) -> dict[str, Any]:
    return {**fields, "weight": weight}


def _text(data: bytes, flags: int) -> str:
    value = kvcodec.decode(data, flags)
    if value is None:
        return data.decode("utf-8", "replace")
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), sort_keys=True)


def render_text(
    text: str, source: str, data: TemplateData, variables: Mapping[str, str], node: Mapping[str, str]
) -> str:
    """Render one template; :class:`TemplateFailed` names the template's line when it fails."""
    env = environment()

    def key(path: str) -> str:
        value = data.fetch(Call("key", path))
        if value is None:
            raise TemplateFailed(f"key({path!r}): no such key (key_or_default gives a default)")
        return str(value)

    def key_or_default(path: str, default: str = "") -> str:
        value = data.fetch(Call("key", path))
        return default if value is None else str(value)

    def tree(prefix: str, dc: str | None = None) -> list[dict[str, str]]:
        return list(data.fetch(Call("tree", prefix, dc)))

    def ls(prefix: str, dc: str | None = None) -> list[dict[str, str]]:
        return [item for item in tree(prefix, dc) if "/" not in item["key"]]

    def service(
        name: str, tag: str | None = None, dc: str | None = None, near: str | None = None, include_warning: bool = False
    ) -> list[dict[str, Any]]:
        return list(data.fetch(Call("service", name, dc, tag, near, include_warning)))

    def services(dc: str | None = None) -> list[dict[str, Any]]:
        return list(data.fetch(Call("services", "", dc)))

    functions: dict[str, Any] = {
        "service": service,
        "services": services,
        "key": key,
        "key_or_default": key_or_default,
        "tree": tree,
        "ls": ls,
        "node": lambda: dict(node),
        "env": lambda name, default="": os.environ.get(name, default),
        "deps": dict(variables),
    }
    try:
        code = env.compile(text, name=source, filename=source)
        template = env.template_class.from_code(env, code, env.make_globals(None))
        return template.render({**variables, **functions})
    except TemplateFailed as err:
        raise TemplateFailed(f"{source}{_line_of(err, source)}: {err}") from None
    except (TemplateError, TypeError, ValueError, KeyError, AttributeError, IndexError) as err:
        raise TemplateFailed(f"{source}{_line_of(err, source)}: {type(err).__name__}: {err}") from None


def _line_of(err: BaseException, source: str) -> str:
    """``:LINE`` of the template where ``err`` was raised (Jinja puts template lines in the traceback)."""
    line = None
    frame = err.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_filename == source:
            line = frame.tb_lineno
        frame = frame.tb_next
    lineno = getattr(err, "lineno", None)
    return f":{line or lineno}" if (line or lineno) else ""


@dataclass
class Rendered:
    """The outcome of one template."""

    template: Template
    destination: Path
    changed: bool = False
    error: str | None = None
    command_exit: int | None = None
    calls: frozenset[Call] = frozenset()
    fallbacks: tuple[str, ...] = ()


def render_one(
    template: Template,
    folder: Path,
    data: TemplateData,
    variables: Mapping[str, str],
    node: Mapping[str, str],
    *,
    run_command: bool = True,
) -> Rendered:
    """Render, write when the bytes change (with a backup when asked), run the command when it did."""
    destination = folder / template.destination
    source = folder / template.source
    data.calls = set()
    data.fallbacks = []
    outcome = Rendered(template, destination)
    try:
        text = render_text(read_template(source), str(source), data, variables, node)
    except (TemplateFailed, OSError, ValueError) as err:
        outcome.error = str(err)
        outcome.calls = frozenset(data.calls)
        return outcome
    outcome.calls = frozenset(data.calls)
    outcome.fallbacks = tuple(data.fallbacks)
    previous = _read_or_none(destination) if template.backup else None
    mode = int(template.perms, 8) if template.perms else None
    try:
        outcome.changed = write_atomic(destination, text, mode)
        if outcome.changed and previous is not None:
            write_atomic(destination.with_name(destination.name + ".bak"), previous, mode)
    except OutputError as err:
        outcome.error = str(err)
        return outcome
    if outcome.changed and template.command is not None and run_command:
        outcome.command_exit = run_template_command(template, folder)
    return outcome


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def run_template_command(template: Template, folder: Path) -> int | None:
    """The template's command, in the manifest's folder, within its timeout; its exit code (None: timed out)."""
    command = template.command
    if command is None:
        return None
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
    shown = command if isinstance(command, str) else " ".join(command)
    timeout = parse_duration(template.command_timeout)
    try:
        result = subprocess.run(argv, cwd=folder, timeout=timeout, capture_output=True, check=False)
    except subprocess.TimeoutExpired:
        log.error("%s: the command %s timed out after %s and was killed", template.destination, shown, timeout)
        return None
    except OSError as err:
        log.error("%s: the command %s could not run: %s", template.destination, shown, err)
        return 127
    tail = printable((result.stderr or result.stdout or b"").decode("utf-8", "replace").strip()[-300:])
    if result.returncode == 0:
        log.info("%s: ran %s (exit 0)", template.destination, printable(shown))
    else:
        log.error("%s: %s exited %d: %s", template.destination, printable(shown), result.returncode, tail)
    return result.returncode


def load_remembered(folder: Path | None, owner: str) -> dict[str, Any]:
    """The last known good answers of an owner's templates (anything of an unexpected shape is dropped)."""
    if folder is None:
        return {}
    path = folder / f"{owner}.templates.json"
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CACHE_BYTES + 1)
        if len(raw) > MAX_CACHE_BYTES:
            return {}
        parsed = json.loads(raw)
    except (OSError, ValueError, RecursionError):
        return {}
    calls = parsed.get("calls") if isinstance(parsed, dict) else None
    return {k: v for k, v in calls.items() if isinstance(k, str)} if isinstance(calls, dict) else {}


def save_remembered(folder: Path | None, owner: str, remembered: Mapping[str, Any]) -> None:
    if folder is None:
        return
    with contextlib.suppress(OSError, OutputError):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(folder / f"{owner}.templates.json", json.dumps({"version": 1, "calls": dict(remembered)}))
