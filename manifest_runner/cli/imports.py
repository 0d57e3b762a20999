"""import: a manifest written from what Consul already holds, to take it over with ``apply --adopt``."""

from __future__ import annotations

from typing import Any

import click

from manifest_runner.cli.common import cli, client_or_exit, connection_options, fail, say_warning, split_connection


@cli.command("import")
@click.option("--owner", required=True, help="The owner of the manifest to write.")
@click.option("--service", "services", multiple=True, help="A service of this agent, by id or by name (repeatable).")
@click.option("--kv-prefix", help="Every key under this prefix, as kv.enforce.")
@click.option("--output", "-o", "target", default="-", show_default=True, help="Where to write the manifest.")
@connection_options
def import_(owner: str, services: tuple[str, ...], kv_prefix: str | None, target: str, **kwargs: Any) -> None:
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

    client = client_or_exit(split_connection(kwargs))
    try:
        imported = import_manifest(client, owner, services, kv_prefix)
        text = imported.text()
        if target == "-":
            click.echo(text, nl=False)
        else:
            write_atomic(target, text, 0o644, follow_any_link=True)
            click.echo(f"wrote {target}", err=True)
    except ManifestRunnerError as err:
        fail(err)
    for note in imported.notes:
        say_warning(note)
