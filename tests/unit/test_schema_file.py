"""The committed JSON Schema is what the models generate, and editors can use it on the examples."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from manifest_runner.cli import cli
from manifest_runner.manifest.jsonschema import manifest_json_schema_text

SCHEMA_FILE = Path(__file__).parent.parent.parent / "schemas" / "manifest.schema.json"


def test_the_committed_schema_is_not_stale() -> None:
    assert SCHEMA_FILE.read_text() == manifest_json_schema_text(), (
        "schemas/manifest.schema.json is stale: run `consul-manifest schema > schemas/manifest.schema.json`"
    )


def test_the_schema_command_prints_it() -> None:
    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0
    assert result.output == SCHEMA_FILE.read_text()


def test_the_schema_describes_fields_and_forbids_unknown_ones() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["additionalProperties"] is False
    assert "prune" in schema["properties"]
    service = schema["$defs"]["Service"]
    assert service["additionalProperties"] is False
    assert "instance id" in service["properties"]["id"]["description"]
    assert {"http", "interval"} <= set(schema["$defs"]["HttpCheck"]["properties"])
