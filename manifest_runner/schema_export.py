"""The manifest's JSON Schema, generated from :mod:`manifest_runner.schema` (pure).

``schemas/manifest.schema.json`` holds its output; a test fails when that file is stale. Editors use it through the
``# yaml-language-server: $schema=...`` comment at the top of each example.
"""

from __future__ import annotations

import json
from typing import Any

from manifest_runner.schema import Manifest


def manifest_json_schema() -> dict[str, Any]:
    schema = Manifest.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "consul-manifest manifest, version 1",
    }


def manifest_json_schema_text() -> str:
    return json.dumps(manifest_json_schema(), indent=2, ensure_ascii=False) + "\n"
