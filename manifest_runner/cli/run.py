"""run: apply, then keep converged."""

from __future__ import annotations

import signal
import sys
from typing import Any

import click

from manifest_runner.cli.common import (
    ListenAddress,
    boot_connection_options,
    boot_options,
    cache_folder,
    child_options,
    child_timing,
    cli,
    client_or_exit,
    load_or_exit,
    split_command,
    split_connection,
)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "--prune",
    is_flag=True,
    help="Also remove the owner's KV keys no longer declared (services are always pruned by run).",
)
@click.option(
    "--resync",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds between full resyncs of the manifests with Consul.",
)
@click.option(
    "--dependency-resync",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds between resolutions of every dependency, whatever the watches said.",
)
@click.option("--lock-timeout", type=float, default=60.0, show_default=True)
@click.option(
    "--listen",
    type=ListenAddress(),
    help="Serve /healthz and /metrics on HOST:PORT, e.g. 127.0.0.1:9090 (loopback), 0.0.0.0:9090 (every address, "
    "for Kubernetes probes and Prometheus), [::1]:9090. A bare :PORT is loopback.",
)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True
)
@child_options
@boot_options
@boot_connection_options
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED, metavar="PATH... [-- CMD [ARG...]]")
def run(
    arguments: tuple[str, ...],
    prune: bool,
    resync: float,
    dependency_resync: float,
    lock_timeout: float,
    listen: str | None,
    log_format: str,
    log_level: str,
    reload_signal: str | None,
    wait: str,
    splay: str,
    debounce: float | None,
    grace: float,
    pristine: bool,
    kill_signal: str,
    pass_token: bool,
    budget: float,
    cache_dir: str | None,
    no_cache: bool,
    offline: bool,
    **kwargs: Any,
) -> None:
    """Apply, then keep converged: watch the manifest files and Consul, re-apply on drift, heartbeat TTL checks,
    re-render the outputs when a dependency changes; optionally supervise a command given after --.

    SIGHUP reloads the manifests; SIGTERM and SIGINT stop cleanly (services with on_exit: deregister are
    deregistered), exit 0. Options go before the manifest paths.

    \b
    Examples:
      consul-manifest run --listen 0.0.0.0:9100 /etc/consul-manifest/
      consul-manifest run --wait 1s:5s app.yaml -- ./server
    """

    from manifest_runner.cli.changes import load_or_exit_problems
    from manifest_runner.converge.pipeline import require_owners
    from manifest_runner.errors import ManifestError
    from manifest_runner.run.runner import Runner, RunOptions
    from manifest_runner.run.supervisor import ChildOptions, signal_number
    from manifest_runner.run.telemetry import configure_logging

    if offline:
        raise click.UsageError("run needs Consul: --offline is for render and exec")
    paths, command = split_command(arguments)
    try:
        reload_number = signal_number(reload_signal)
    except ValueError:
        raise click.BadParameter(f"unknown signal {reload_signal!r}", param_hint="--signal") from None
    try:
        kill_number = signal_number(kill_signal) or signal.SIGTERM
    except ValueError:
        raise click.BadParameter(f"unknown signal {kill_signal!r}", param_hint="--kill-signal") from None
    configure_logging(log_format, log_level)
    manifest_set = load_or_exit(paths)
    try:
        require_owners(manifest_set)
    except ManifestError as err:
        load_or_exit_problems(err)
    client = client_or_exit(split_connection(kwargs))
    options = RunOptions(
        prune=prune,
        resync=resync,
        dependency_resync=dependency_resync,
        lock_timeout=lock_timeout,
        budget=budget,
        listen=listen,
        cache_dir=cache_folder(cache_dir, no_cache),
        child=ChildOptions(
            list(command),
            reload_number,
            grace=grace,
            pass_token=pass_token,
            pristine=pristine,
            kill_signal=kill_number,
            **child_timing(wait, splay, debounce),
        )
        if command
        else None,
    )
    sys.exit(Runner(manifest_set, paths, client, options).run())
