"""validate, schema and agent: commands that never change Consul."""

from __future__ import annotations

import sys

import click

from manifest_runner.cli.common import (
    EXIT_FAILED,
    PATHS,
    cli,
    load_or_exit,
)


@cli.command()
@PATHS
@click.option("--quiet", "-q", is_flag=True, help="Print nothing when the manifests are valid.")
def validate(paths: tuple[str, ...], quiet: bool) -> None:
    """Parse and validate manifests; print every problem as file:line:col. Never contacts Consul."""
    manifest_set = load_or_exit(paths)
    if not quiet:
        manifests = manifest_set.manifests
        services = sum(len(m.manifest.services) for m in manifests)
        keys = sum(len(m.manifest.kv.seed) + len(m.manifest.kv.enforce) for m in manifests)
        dependencies = sum(len(m.manifest.dependencies) for m in manifests)
        click.echo(
            f"valid: {len(manifests)} manifest{'s' if len(manifests) != 1 else ''} "
            f"(owners: {', '.join(manifest_set.owners)}), {services} services, {keys} KV keys, "
            f"{dependencies} dependencies"
        )


@cli.command()
def schema() -> None:
    """Print the manifest's JSON Schema (the same as schemas/manifest.schema.json)."""
    from manifest_runner.manifest.jsonschema import manifest_json_schema_text

    click.echo(manifest_json_schema_text(), nl=False)


@cli.command()
@click.option("--dev", is_flag=True, required=True, help="Start a throw-away dev agent (the only mode).")
@click.option("--addr-file", type=click.Path(dir_okay=False), help="Write the agent's address here once ready.")
def agent(dev: bool, addr_file: str | None) -> None:
    """Start a throw-away local Consul agent on loopback (needs a consul binary: $CONSUL_BIN or PATH).

    Free ports, DNS and gRPC off, nothing persisted. Prints the address; stops on Ctrl-C or SIGTERM.
    """
    import signal
    import threading
    from pathlib import Path

    from manifest_runner.testing.devagent import AgentError, DevAgent, find_consul_binary

    binary = find_consul_binary()
    if binary is None:
        click.echo(
            "error: no consul binary: set CONSUL_BIN or put consul on PATH (scripts/get-consul fetches one)", err=True
        )
        sys.exit(EXIT_FAILED)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with DevAgent(binary) as running:
            click.echo(f"consul dev agent ready: CONSUL_HTTP_ADDR={running.http_addr}  (log: {running.log_path})")
            if addr_file:
                target = Path(addr_file)
                tmp = target.with_name(target.name + ".tmp")
                tmp.write_text(running.http_addr + "\n")
                tmp.replace(target)
            try:
                while not stop.wait(0.5):
                    if running.process is None or running.process.poll() is not None:
                        click.echo(f"error: the agent exited: {running.log_tail()}", err=True)
                        sys.exit(EXIT_FAILED)
            except KeyboardInterrupt:
                pass
    except AgentError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo("consul dev agent stopped")
