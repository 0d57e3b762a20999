"""Templates (``outputs.templates``): the sandboxed Jinja2 environment, and their validation at ``validate`` time.

Jinja2's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`: a template reads data, it cannot call methods that
change anything, reach attributes starting with ``_`` or import. Undefined names are errors (``StrictUndefined``),
not empty text. The vocabulary mirrors consul-template's where it fits:

- ``service(name, tag=None, dc=None, near=None, include_warning=False)``: healthy instances (``address``, ``port``,
  ``id``, ``node``, ``tags``, ``meta``, ``status``, ``datacenter``, ``weight``), in Consul's order;
- ``services(dc=None)``: every service of the catalog (``name``, ``tags``);
- ``key(path)``, ``key_or_default(path, default)``, ``tree(prefix)`` (every key under it, ``key`` relative, ``value``),
  ``ls(prefix)`` (the keys directly under it);
- ``node()``: the agent's node (``name``, ``address``, ``datacenter``); ``env(name)``: an environment variable;
- the manifest's dependencies by name (their resolved values), and all of them as ``deps``.

Filters for embedding safely: ``shell_quote``, ``json``, ``yaml``, ``toml``, plus Jinja's own (``indent``, ``join``,
``sort``...). This module does no I/O but :func:`read_template`; the data comes from :mod:`manifest_runner.resolve`.
"""

from __future__ import annotations

import json
import shlex
from io import StringIO
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from manifest_runner.errors import Problem

FUNCTIONS = ("service", "services", "key", "key_or_default", "tree", "ls", "node", "env", "deps")
JINJA_GLOBALS = ("range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop", "self", "caller", "varargs")
MAX_TEMPLATE_BYTES = 1024 * 1024


def _yaml(value: Any) -> str:
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    out = StringIO()
    yaml.dump(value, out)
    return out.getvalue()


def _toml(value: Any) -> str:
    import tomli_w

    if not isinstance(value, dict):
        raise TypeError("the toml filter takes a map (TOML documents are tables)")
    return tomli_w.dumps(value)


def environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False, trim_blocks=False
    )
    env.filters["shell_quote"] = lambda value: shlex.quote(str(value))
    env.filters["json"] = lambda value: json.dumps(value, sort_keys=True, ensure_ascii=False)
    env.filters["yaml"] = _yaml
    env.filters["toml"] = _toml
    return env


def read_template(path: Path) -> str:
    """A template's text: at most 1 MiB of UTF-8."""
    with path.open("rb") as handle:
        data = handle.read(MAX_TEMPLATE_BYTES + 1)
    if len(data) > MAX_TEMPLATE_BYTES:
        raise ValueError(f"the template is over {MAX_TEMPLATE_BYTES:,} bytes")
    return data.decode("utf-8")


def check_template(text: str, name: str, known: set[str]) -> list[Problem]:
    """Syntax errors and unknown names (neither a function, a dependency of the manifest, nor set in the template),
    each at ``name:line:col``."""
    env = environment()
    try:
        tree = env.parse(text, name=name)
    except TemplateSyntaxError as err:
        return [Problem(name, err.lineno or 1, 1, "", f"template syntax: {err.message}")]
    unknown = meta.find_undeclared_variables(tree) - set(FUNCTIONS) - set(JINJA_GLOBALS) - known
    problems = []
    lines = text.splitlines()
    for variable in sorted(unknown):
        node = next((n for n in tree.find_all(nodes.Name) if n.name == variable), None)
        line = node.lineno if node is not None else 1
        column = (lines[line - 1].find(variable) + 1) if 0 < line <= len(lines) else 1
        hint = f"; functions: {', '.join(FUNCTIONS[:-1])}; dependencies: {', '.join(sorted(known)) or 'none'}"
        problems.append(Problem(name, line, max(column, 1), "", f"unknown name {variable!r} in the template{hint}"))
    return problems


def template_problems(folder: Path, manifest_file: str, templates: list[Any], known: set[str]) -> list[Problem]:
    """Every problem of a manifest's templates: a source that cannot be read, syntax, unknown names."""
    problems = []
    for number, template in enumerate(templates):
        source = folder / template.source
        try:
            text = read_template(source)
        except (OSError, ValueError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            problems.append(
                Problem(manifest_file, 0, 0, f"outputs.templates[{number}].source", f"{source}: cannot read: {reason}")
            )
            continue
        problems.extend(check_template(text, str(source), known))
    return problems
