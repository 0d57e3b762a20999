"""The manifest's JSON Schema, generated from :mod:`manifest_runner.manifest.model`.

``schemas/manifest.schema.json`` holds its output; a test fails when that file is stale. Editors use it through the
``# yaml-language-server: $schema=...`` comment at the top of each example.

Field descriptions come from the docstrings under each field in ``model.py``, read here with :mod:`ast` when the
schema is exported, rather than by pydantic at every import (``use_attribute_docstrings`` costs ~40 ms of start-up).
"""

from __future__ import annotations

import ast
import inspect
import json
from types import ModuleType
from typing import Any

from manifest_runner.manifest import checks, fields, model
from manifest_runner.manifest.model import Manifest

MODEL_MODULES: tuple[ModuleType, ...] = (fields, checks, model)


def attribute_docstrings() -> dict[str, dict[str, str]]:
    """{class name: {field name: docstring}} for the models of the manifest's modules."""
    found: dict[str, dict[str, str]] = {}
    for node in (n for module in MODEL_MODULES for n in ast.parse(inspect.getsource(module)).body):
        if not isinstance(node, ast.ClassDef):
            continue
        described: dict[str, str] = {}
        for current, following in zip(node.body, node.body[1:], strict=False):
            if (
                isinstance(current, ast.AnnAssign)
                and isinstance(current.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                described[current.target.id] = inspect.cleandoc(following.value.value)
        found[node.name] = described
    return found


def _inherited(name: str, docs: dict[str, dict[str, str]]) -> dict[str, str]:
    found = next((getattr(m, name) for m in MODEL_MODULES if hasattr(m, name)), None)
    merged: dict[str, str] = {}
    for klass in reversed(getattr(found, "__mro__", ())):
        merged.update(docs.get(klass.__name__, {}))
    return merged


def manifest_json_schema() -> dict[str, Any]:
    document = Manifest.model_json_schema(mode="validation")
    docs = attribute_docstrings()
    for name, definition in [("Manifest", document), *document.get("$defs", {}).items()]:
        descriptions = _inherited(name, docs)
        for field, prop in definition.get("properties", {}).items():
            if field in descriptions and "description" not in prop:
                prop["description"] = descriptions[field]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **document,
        "title": "consul-manifest manifest, version 1",
    }


def manifest_json_schema_text() -> str:
    return json.dumps(manifest_json_schema(), indent=2, ensure_ascii=False) + "\n"
