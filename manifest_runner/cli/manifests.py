"""validate, schema and agent: commands that never change Consul."""

from __future__ import annotations

import sys
from typing import Any

import click

from manifest_runner.cli.common import (
    EXIT_FAILED,
    EXIT_INVALID,
    PATHS,
    cli,
    load_or_exit,
)


@cli.command()
@PATHS
@click.option("--quiet", "-q", is_flag=True, help="Print nothing when the manifests are valid.")
@click.option(
    "--output", type=click.Choice(["text", "json"]), default="text", show_default=True, help="json: docs/json.md."
)
def validate(paths: tuple[str, ...], quiet: bool, output: str) -> None:
    """Parse and validate manifests (and their templates); print every problem as file:line:col. Never contacts
    Consul. Exit 3 when anything is invalid.

    \b
    Examples:
      consul-manifest validate deploy/consul/
      consul-manifest validate --output json deploy/consul/ | jq '.problems[]'
    """
    if output == "json":
        _validate_json(paths)
        return
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


def _validate_json(paths: tuple[str, ...]) -> None:
    import json

    from manifest_runner.errors import ManifestError
    from manifest_runner.manifest.loader import load_manifests

    document: dict[str, Any] = {"format_version": 1, "command": "validate", "ok": True, "manifests": [], "problems": []}
    try:
        manifest_set = load_manifests(paths)
    except ManifestError as err:
        document["ok"] = False
        document["problems"] = [
            {"file": p.file, "line": p.line, "col": p.col, "path": p.path, "message": p.message} for p in err.problems
        ]
    else:
        document["manifests"] = [
            {
                "file": str(m.file),
                "owner": m.owner,
                "services": len(m.manifest.services),
                "kv_keys": len(m.manifest.kv.seed) + len(m.manifest.kv.enforce),
                "dependencies": len(m.manifest.dependencies),
                "templates": len(m.manifest.outputs.templates),
            }
            for m in manifest_set.manifests
        ]
    click.echo(json.dumps(document, indent=2))
    if not document["ok"]:
        sys.exit(EXIT_INVALID)


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    Examples:
      eval "$(consul-manifest completion bash)"                       (in ~/.bashrc)
      consul-manifest completion zsh > "${fpath[1]}/_consul-manifest"
      consul-manifest completion fish > ~/.config/fish/completions/consul-manifest.fish
    """
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)
    if completer is None:  # pragma: no cover - the three shells click ships
        raise click.UsageError(f"no completion for {shell}")
    click.echo(completer(cli, {}, "consul-manifest", "_CONSUL_MANIFEST_COMPLETE").source())


@cli.command()
def schema() -> None:
    """Print the manifest's JSON Schema (the same as schemas/manifest.schema.json).

    \b
    Example:
      consul-manifest schema > manifest.schema.json     (then: # yaml-language-server: $schema=manifest.schema.json)
    """
    from manifest_runner.manifest.jsonschema import manifest_json_schema_text

    click.echo(manifest_json_schema_text(), nl=False)


@cli.command()
@click.option("--dev", is_flag=True, required=True, help="Start a throw-away dev agent (the only mode).")
@click.option("--addr-file", type=click.Path(dir_okay=False), help="Write the agent's address here once ready.")
def agent(dev: bool, addr_file: str | None) -> None:
    """Start a throw-away local Consul agent on loopback (needs a consul binary: $CONSUL_BIN or PATH).

    Free ports, DNS and gRPC off, nothing persisted. Prints the address; stops on Ctrl-C or SIGTERM.

    \b
    Example:
      consul-manifest agent --dev --addr-file /tmp/consul.addr &
      CONSUL_HTTP_ADDR=$(cat /tmp/consul.addr) consul-manifest apply examples/billing.yaml
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
