"""The ``consul-manifest`` command line: argument parsing and exit codes only, no business logic.

Exit codes: 0 success (``plan``: no changes), 1 the operation failed, 2 ``plan --detailed-exitcode`` with changes
pending, 3 invalid manifest or settings (nothing was sent to Consul), 4 Consul unreachable or refusing.

Start-up time is part of the product (containers call ``render`` at boot): this module imports only click at the
top; every command imports what it needs when it runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, ClassVar, NoReturn, TypeVar

import click

from manifest_runner._version import __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CHANGES = 2
EXIT_INVALID = 3
EXIT_CONSUL = 4

F = TypeVar("F", bound=Callable[..., Any])

PATHS = click.argument("paths", nargs=-1, required=True, metavar="PATH...")


def exit_code_for(error: BaseException) -> int:
    """The documented exit code for one of our errors."""
    from manifest_runner import errors

    if isinstance(error, errors.ManifestError | errors.SettingsError):
        return EXIT_INVALID
    if isinstance(error, errors.ConsulUnavailable | errors.ConsulRefused):
        return EXIT_CONSUL
    return EXIT_FAILED


def fail(error: BaseException) -> NoReturn:
    """Print an error the way a user can act on it (no traceback) and exit with its code."""
    click.echo(f"error: {error}", err=True)
    sys.exit(exit_code_for(error))


def connection_options(func: F) -> F:
    """Flags that override Consul's own environment variables (flag > environment > default)."""
    return _connection_options(func, per_request_timeout=True)


def boot_connection_options(func: F) -> F:
    """The connection flags of render and exec, where --timeout is the total wait instead (see the commands)."""
    return _connection_options(func, per_request_timeout=False)


def _connection_options(func: F, *, per_request_timeout: bool) -> F:
    options = [
        click.option("--http-addr", help="Consul HTTP address [env: CONSUL_HTTP_ADDR; default 127.0.0.1:8500]."),
        click.option("--token", help="ACL token [env: CONSUL_HTTP_TOKEN]; prefer --token-file."),
        click.option("--token-file", help="File holding the ACL token [env: CONSUL_HTTP_TOKEN_FILE]."),
        click.option("--ca-file", "cacert", help="CA bundle to verify Consul's certificate [env: CONSUL_CACERT]."),
        click.option("--ca-path", "capath", help="Folder of CA certificates [env: CONSUL_CAPATH]."),
        click.option("--client-cert", help="Client certificate for mutual TLS [env: CONSUL_CLIENT_CERT]."),
        click.option("--client-key", help="Client key for mutual TLS [env: CONSUL_CLIENT_KEY]."),
        click.option("--tls-server-name", help="Server name to verify (SNI) [env: CONSUL_TLS_SERVER_NAME]."),
        click.option("--datacenter", help="Datacenter [env: CONSUL_DATACENTER; default: the agent's]."),
    ]
    if per_request_timeout:
        options.append(
            click.option(
                "--timeout", type=float, help="Seconds one request may take [env: CONSUL_MANIFEST_TIMEOUT; 5]."
            )
        )
    for option in reversed(options):
        func = option(func)
    return func


CONNECTION_KEYS = (
    "http_addr",
    "token",
    "token_file",
    "cacert",
    "capath",
    "client_cert",
    "client_key",
    "tls_server_name",
    "datacenter",
    "timeout",
)


def split_connection(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the connection flags out of a command's keyword arguments."""
    return {key: kwargs.pop(key, None) for key in CONNECTION_KEYS}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "--version", "-V", prog_name="consul-manifest", message="%(prog)s %(version)s")
def cli() -> None:
    """Declarative service manifests for HashiCorp Consul.

    Register services with their health checks, seed and enforce KV configuration, resolve dependencies into an
    env file or a child's environment, and keep all of it converged.

    \b
    Exit codes: 0 ok (plan: no changes), 1 failed, 2 plan: changes pending,
                3 invalid manifest or settings, 4 Consul unreachable or refusing.
    """


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


def split_command(arguments: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``PATH... [-- CMD ARG...]`` -> (paths, command). Options must come before the paths (they would otherwise
    be taken for paths, since the command's own options must pass through untouched)."""
    split = arguments.index("--") if "--" in arguments else len(arguments)
    paths, command = arguments[:split], arguments[split + 1 :]
    if not paths:
        raise click.UsageError("give at least one manifest PATH")
    stray = [p for p in paths if p.startswith("-")]
    if stray:
        raise click.UsageError(f"options go before the manifest paths: {' '.join(stray)}")
    return paths, command


def load_or_exit(paths: tuple[str, ...]) -> Any:
    """Load and validate every manifest; on any problem print them all and exit 3 before contacting Consul."""
    from manifest_runner.errors import ManifestError
    from manifest_runner.loader import load_manifests

    try:
        return load_manifests(paths)
    except ManifestError as err:
        for problem in err.problems:
            click.echo(str(problem), err=True)
        count = len(err.problems)
        click.echo(f"invalid: {count} problem{'s' if count != 1 else ''}; nothing was sent to Consul", err=True)
        sys.exit(EXIT_INVALID)


def client_or_exit(connection: dict[str, Any]) -> Any:
    """A Consul client from flags over the environment; invalid settings exit 3."""
    from manifest_runner.consul.client import ConsulClient
    from manifest_runner.errors import SettingsError

    try:
        return ConsulClient.from_env(**connection)
    except SettingsError as err:
        fail(err)


def desired_states(manifest_set: Any) -> list[Any]:
    from manifest_runner.desired import desired_state

    return [desired_state(owner, [m.manifest for m in manifest_set.of_owner(owner)]) for owner in manifest_set.owners]


class Printer:
    """Lines to stdout, coloured by their leading symbol when stdout is a terminal (rich), plain otherwise."""

    STYLES: ClassVar[dict[str, str]] = {"+": "green", "~": "yellow", "-": "red", "!": "bold red"}

    def __init__(self) -> None:
        self.console: Any = None
        if sys.stdout.isatty():
            from rich.console import Console

            self.console = Console(highlight=False, soft_wrap=True)

    def line(self, text: str) -> None:
        if self.console is None:
            click.echo(text)
            return
        from rich.text import Text

        stripped = text.lstrip()
        style = self.STYLES.get(stripped[:1], "")
        self.console.print(Text(text, style=style))


@cli.command()
@PATHS
@click.option("--prune", is_flag=True, help="Also plan to remove the owner's services and keys no longer declared.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when changes are pending, 0 when none.")
@connection_options
def plan(paths: tuple[str, ...], prune: bool, output: str, detailed_exitcode: bool, **kwargs: Any) -> None:
    """Show what apply would change: + create, ~ update (changed fields), - delete, ! conflict. Sends no write."""
    from manifest_runner.errors import ManifestRunnerError
    from manifest_runner.plan import PlanPolicy
    from manifest_runner.planview import plan_lines, plans_json
    from manifest_runner.reconcile import make_plan

    manifest_set = load_or_exit(paths)
    client = client_or_exit(split_connection(kwargs))
    try:
        plans = [make_plan(client, d, PlanPolicy(prune=prune)) for d in desired_states(manifest_set)]
    except ManifestRunnerError as err:
        fail(err)
    if output == "json":
        click.echo(plans_json(plans))
    else:
        printer = Printer()
        for one in plans:
            for line in plan_lines(one):
                printer.line(line)
    if any(p.conflicts for p in plans):
        sys.exit(EXIT_FAILED)
    if detailed_exitcode and any(p.has_changes for p in plans):
        sys.exit(EXIT_CHANGES)


def _converge_command(
    paths: tuple[str, ...],
    *,
    prune: bool,
    destroy: bool,
    dry_run: bool,
    output: str,
    lock_timeout: float,
    connection: dict[str, Any],
) -> None:
    """apply and destroy: validate everything, then converge each owner in turn; exit with the documented code."""
    from manifest_runner.errors import ManifestRunnerError
    from manifest_runner.plan import PlanPolicy

    manifest_set = load_or_exit(paths)
    client = client_or_exit(connection)
    policy = PlanPolicy(prune=prune, destroy=destroy)
    printer = Printer()
    say = printer.line if output == "text" else (lambda _text: None)
    try:
        if dry_run:
            _dry_run(client, desired_states(manifest_set), policy, output, say)
        outcomes = [
            _converge_one(client, desired, policy, lock_timeout, say) for desired in desired_states(manifest_set)
        ]
    except ManifestRunnerError as err:
        fail(err)
    if output == "json":
        import json

        documents = [{"plan": o.plan.to_json(), "report": o.report.to_json() if o.report else None} for o in outcomes]
        click.echo(json.dumps(documents, indent=2, default=str))
    errors = [o.report.error for o in outcomes if o.report is not None and o.report.error is not None]
    if errors:
        click.echo(f"error: {errors[0]}", err=True)
        sys.exit(exit_code_for(errors[0]))
    if not all(o.ok for o in outcomes):
        sys.exit(EXIT_FAILED)


def _dry_run(client: Any, desired: list[Any], policy: Any, output: str, say: Callable[[str], None]) -> NoReturn:
    from manifest_runner.planview import plan_lines, plans_json
    from manifest_runner.reconcile import make_plan

    plans = [make_plan(client, d, policy) for d in desired]
    if output == "json":
        click.echo(plans_json(plans))
    else:
        for one in plans:
            for line in plan_lines(one):
                say(line)
        say("dry run: nothing was applied")
    sys.exit(EXIT_FAILED if any(p.conflicts for p in plans) else EXIT_OK)


def _converge_one(client: Any, desired: Any, policy: Any, lock_timeout: float, say: Callable[[str], None]) -> Any:
    from manifest_runner.planview import plan_lines
    from manifest_runner.reconcile import converge

    outcome = converge(client, desired, policy, lock_timeout=lock_timeout, on_result=lambda r: say("  " + r.line()))
    report = outcome.report
    if outcome.plan.conflicts and report is None:
        for line in plan_lines(outcome.plan):
            say(line)
        say(f"{desired.owner}: not applied: {len(outcome.plan.conflicts)} conflicts")
    elif report is None:
        say(f"{desired.owner}: no changes")
    else:
        for result in report.results:
            if result.status != "done":
                say("  " + result.line())
        say(report.summary())
    return outcome


@cli.command()
@PATHS
@click.option("--prune", is_flag=True, help="Remove the owner's services and keys no longer declared.")
@click.option("--dry-run", is_flag=True, help="Show the plan and apply nothing.")
@click.option(
    "--lock-timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for another apply of the same owner to finish.",
)
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@connection_options
def apply(paths: tuple[str, ...], prune: bool, dry_run: bool, lock_timeout: float, output: str, **kwargs: Any) -> None:
    """Make Consul match the manifests: one line per action, then a summary. Unchanged manifests write nothing."""
    _converge_command(
        paths,
        prune=prune,
        destroy=False,
        dry_run=dry_run,
        output=output,
        lock_timeout=lock_timeout,
        connection=split_connection(kwargs),
    )


@cli.command()
@PATHS
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (needed when stdin is not a terminal).")
@click.option("--dry-run", is_flag=True, help="Show what would be removed and remove nothing.")
@click.option("--lock-timeout", type=float, default=60.0, show_default=True)
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@connection_options
def destroy(paths: tuple[str, ...], yes: bool, dry_run: bool, lock_timeout: float, output: str, **kwargs: Any) -> None:
    """Remove everything these manifests' owners created (their services on this agent and their keys), nothing
    else."""
    if not (yes or dry_run):
        if not sys.stdin.isatty():
            click.echo(
                "error: destroy removes every service and key these owners created; pass --yes to confirm", err=True
            )
            sys.exit(EXIT_INVALID)
        click.confirm("Remove everything these manifests' owners created?", abort=True)
    _converge_command(
        paths,
        prune=True,
        destroy=True,
        dry_run=dry_run,
        output=output,
        lock_timeout=lock_timeout,
        connection=split_connection(kwargs),
    )


BOOT_OPTIONS = [
    click.option(
        "--timeout",
        "budget",
        type=float,
        default=5.0,
        show_default=True,
        help="Total seconds to wait for Consul; then the cache and fallbacks are used. Never hangs.",
    ),
    click.option(
        "--cache-dir",
        type=click.Path(file_okay=False),
        help="Where last known good values are kept [env: CONSUL_MANIFEST_CACHE_DIR; "
        "default: $XDG_CACHE_HOME/consul-manifest].",
    ),
    click.option("--no-cache", is_flag=True, help="Neither read nor write the last-known-good cache."),
    click.option("--offline", is_flag=True, help="Do not ask Consul: cache and fallbacks only."),
]


def boot_options(func: F) -> F:
    for option in reversed(BOOT_OPTIONS):
        func = option(func)
    return func


def resolve_or_exit(
    paths: tuple[str, ...],
    budget: float,
    cache_dir: str | None,
    no_cache: bool,
    offline: bool,
    connection: dict[str, Any],
) -> tuple[Any, Any]:
    """Validate, then resolve every dependency within ``budget`` seconds; print warnings; exit 1 when a required
    dependency resolved from nothing (naming each one)."""
    from pathlib import Path

    from manifest_runner.boot import require_all, resolve_set
    from manifest_runner.cache import default_cache_dir
    from manifest_runner.errors import ManifestRunnerError
    from manifest_runner.resolve import Budget

    manifest_set = load_or_exit(paths)
    client = None if offline else client_or_exit(connection)
    folder = None if no_cache else Path(cache_dir) if cache_dir else default_cache_dir()
    resolution = resolve_set(manifest_set, client, folder, Budget.of(budget))
    for warning in resolution.warnings:
        click.echo(f"warning: {warning}", err=True)
    try:
        require_all(resolution)
    except ManifestRunnerError as err:
        fail(err)
    return manifest_set, resolution


@cli.command()
@PATHS
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["env", "docker", "json", "yaml"]),
    help="Format for --output or standard output [default: from the file name, else env].",
)
@click.option(
    "--output",
    "-o",
    help="Write every dependency to this one file ('-': standard output) instead of each manifest's outputs.",
)
@boot_options
@boot_connection_options
def render(
    paths: tuple[str, ...],
    fmt: str | None,
    output: str | None,
    budget: float,
    cache_dir: str | None,
    no_cache: bool,
    offline: bool,
    **kwargs: Any,
) -> None:
    """Resolve the dependencies once and write the outputs (for container boot).

    Sources, in order: Consul (healthy instances only), the last known good value, the static fallback.
    Files are replaced atomically and only when their bytes change. Exit 1 if a required dependency has no value
    (nothing is written then).
    """
    from manifest_runner.boot import write_one, write_outputs
    from manifest_runner.errors import ManifestRunnerError

    manifest_set, resolution = resolve_or_exit(paths, budget, cache_dir, no_cache, offline, split_connection(kwargs))
    try:
        if output is not None or not any(
            m.manifest.outputs.env_file or m.manifest.outputs.json_file or m.manifest.outputs.yaml_file
            for m in manifest_set.manifests
        ):
            write_one(resolution, output or "-", fmt, lambda text: click.echo(text, nl=False))
            if output not in (None, "-"):
                click.echo(f"wrote {output}", err=True)
            return
        for path, changed in write_outputs(manifest_set, resolution):
            click.echo(f"{'wrote' if changed else 'unchanged'} {path}", err=True)
    except ManifestRunnerError as err:
        fail(err)


@cli.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--watch", is_flag=True, help="Keep watching Consul; on a change, restart the command (or signal it).")
@click.option("--signal", "reload_signal", help="With --watch: send this signal (e.g. SIGHUP) instead of restarting.")
@click.option(
    "--debounce",
    type=float,
    default=1.0,
    show_default=True,
    help="With --watch: seconds of quiet after a change before acting on it.",
)
@click.option(
    "--grace",
    type=float,
    default=10.0,
    show_default=True,
    help="With --watch: seconds a child has to exit after SIGTERM on restart before SIGKILL.",
)
@boot_options
@boot_connection_options
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED, metavar="PATH... -- CMD [ARG...]")
def exec_(
    arguments: tuple[str, ...],
    watch: bool,
    reload_signal: str | None,
    debounce: float,
    grace: float,
    budget: float,
    cache_dir: str | None,
    no_cache: bool,
    offline: bool,
    **kwargs: Any,
) -> None:
    """Resolve the dependencies, then run CMD with them in its environment.

    Without --watch, consul-manifest replaces itself with CMD: signals reach it directly and its exit code is the
    exit code. With --watch, CMD runs as a child: signals are forwarded, and when a value changes the child is
    restarted (or sent --signal) after --debounce seconds of quiet; the exit code is the child's.
    Options go before the manifest paths.
    """
    if "--" not in arguments:
        raise click.UsageError("separate the command with --: consul-manifest exec [OPTIONS] PATH... -- CMD [ARG...]")
    paths, command = split_command(arguments)
    if not command:
        raise click.UsageError("give a CMD after --")
    connection = split_connection(kwargs)
    if watch:
        sys.exit(
            _exec_watch(
                paths, list(command), budget, cache_dir, no_cache, offline, connection, reload_signal, debounce, grace
            )
        )
    import os

    from manifest_runner.boot import child_environment

    _, resolution = resolve_or_exit(paths, budget, cache_dir, no_cache, offline, connection)
    environment = child_environment(resolution.all)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], list(command), environment)  # noqa: S606 - no shell: the user's argv as given
    except FileNotFoundError:
        click.echo(f"error: {command[0]}: command not found", err=True)
        sys.exit(127)
    except PermissionError:
        click.echo(f"error: {command[0]}: permission denied", err=True)
        sys.exit(126)


def _exec_watch(
    paths: tuple[str, ...],
    command: list[str],
    budget: float,
    cache_dir: str | None,
    no_cache: bool,
    offline: bool,
    connection: dict[str, Any],
    reload_signal: str | None,
    debounce: float,
    grace: float,
) -> int:
    from pathlib import Path

    from manifest_runner.cache import default_cache_dir
    from manifest_runner.errors import ManifestRunnerError
    from manifest_runner.supervise import signal_number, supervise

    try:
        signal_number(reload_signal)
    except (AttributeError, ValueError):
        raise click.BadParameter(f"unknown signal {reload_signal!r}", param_hint="--signal") from None
    manifest_set = load_or_exit(paths)
    client = None if offline else client_or_exit(connection)
    folder = None if no_cache else Path(cache_dir) if cache_dir else default_cache_dir()
    try:
        return supervise(
            manifest_set,
            client,
            command,
            cache_dir=folder,
            budget=budget,
            reload_signal=reload_signal,
            debounce=debounce,
            grace=grace,
            echo=lambda text: click.echo(text, err=True),
        )
    except FileNotFoundError:
        click.echo(f"error: {command[0]}: command not found", err=True)
        return 127
    except ManifestRunnerError as err:
        fail(err)


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
@click.option("--listen", help="Serve /healthz and /metrics on this loopback address, e.g. 127.0.0.1:9090.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True
)
@click.option("--signal", "reload_signal", help="With a command: send this signal on a change instead of restarting.")
@click.option(
    "--debounce",
    type=float,
    default=1.0,
    show_default=True,
    help="With a command: seconds of quiet after a change before restarting or signalling it.",
)
@click.option("--grace", type=float, default=10.0, show_default=True)
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
    debounce: float,
    grace: float,
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
    """
    from pathlib import Path

    from manifest_runner.cache import default_cache_dir
    from manifest_runner.runner import Runner, RunOptions
    from manifest_runner.status import configure_logging

    if offline:
        raise click.UsageError("run needs Consul: --offline is for render and exec")
    paths, command = split_command(arguments)
    configure_logging(log_format, log_level)
    manifest_set = load_or_exit(paths)
    client = client_or_exit(split_connection(kwargs))
    options = RunOptions(
        prune=prune,
        resync=resync,
        dependency_resync=dependency_resync,
        lock_timeout=lock_timeout,
        budget=budget,
        listen=listen,
        cache_dir=None if no_cache else Path(cache_dir) if cache_dir else default_cache_dir(),
        command=list(command) or None,
        reload_signal=reload_signal,
        child_debounce=debounce,
        grace=grace,
    )
    sys.exit(Runner(manifest_set, paths, client, options).run())


@cli.command()
def schema() -> None:
    """Print the manifest's JSON Schema (the same as schemas/manifest.schema.json)."""
    from manifest_runner.schema_export import manifest_json_schema_text

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

    from manifest_runner.devagent import AgentError, DevAgent, find_consul_binary

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


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="consul-manifest")
