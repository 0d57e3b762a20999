"""import: a manifest written from what Consul already holds, to take it over with ``apply --adopt``."""

from __future__ import annotations

from typing import Any

import click

from manifest_runner.cli.common import (
    cli,
    client_or_exit,
    connection_options,
    fail,
    say_info,
    say_requests,
    say_warning,
    split_connection,
    verbosity_options,
)


@cli.command("import")
@click.option("--owner", required=True, help="The owner of the manifest to write.")
@click.option("--service", "services", multiple=True, help="A service of this agent, by id or by name (repeatable).")
@click.option("--kv-prefix", help="Every key under this prefix, as kv.enforce.")
@click.option("--output", "-o", "target", default="-", show_default=True, help="Where to write the manifest.")
@click.option(
    "--report",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: what was imported, as one document on stdout (with -o FILE); docs/json.md.",
)
@verbosity_options
@connection_options
def import_(
    owner: str, services: tuple[str, ...], kv_prefix: str | None, target: str, report: str, **kwargs: Any
) -> None:
    """Write a manifest from existing services and keys; `apply --adopt` on it then takes them over, and plans
    nothing else.

    \b
    Example:
      consul-manifest import --owner billing --service billing-api --kv-prefix billing/ -o billing.yaml
      consul-manifest apply --adopt billing.yaml
    """
    from manifest_runner.converge.importer import import_manifest
    from manifest_runner.errors import ManifestRunnerError
    from manifest_runner.resolve.writer import write_atomic

    if report == "json" and target == "-":
        raise click.UsageError("--report json prints the report on stdout: write the manifest with -o FILE")
    client = client_or_exit(split_connection(kwargs))
    try:
        imported = import_manifest(client, owner, services, kv_prefix)
        text = imported.text()
        if target == "-":
            click.echo(text, nl=False)
        else:
            write_atomic(target, text, 0o644, follow_any_link=True)
            say_info(f"wrote {target}")
    except ManifestRunnerError as err:
        fail(err)
    for note in imported.notes:
        say_warning(note)
    if report == "json":
        import json

        manifest = imported.manifest
        document = {
            "format_version": 1,
            "command": "import",
            "owner": owner,
            "written": target,
            "services": [str(s.get("id", s.get("name"))) for s in manifest.get("services", [])],
            "kv_keys": len((manifest.get("kv") or {}).get("enforce", {})),
            "notes": list(imported.notes),
        }
        click.echo(json.dumps(document, indent=2))
    say_requests(client)
