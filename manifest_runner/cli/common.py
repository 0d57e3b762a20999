"""What every command shares: exit codes, the group, the flags of Consul's connection contract, loading the
manifests and reaching Consul the same way, printing. Argument parsing and exit codes only; no business logic.

Exit codes: 0 success (``plan``: no changes), 1 the operation failed, 2 ``plan --detailed-exitcode`` with changes
pending, 3 invalid manifest or settings (nothing was sent to Consul), 4 Consul unreachable or refusing.

Start-up time is part of the product (containers call ``render`` at boot): only click is imported at the top;
every command imports what it needs when it runs.
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
    if isinstance(error, errors.ConsulUnavailable | errors.ConsulRefused | errors.ConsulProtocolError):
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
    from manifest_runner.manifest.loader import load_manifests

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
    from manifest_runner.converge.desired import desired_states as by_owner

    return list(by_owner(manifest_set).values())


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

    from manifest_runner.errors import ManifestRunnerError
    from manifest_runner.resolve.delivery import require_all, resolve_set
    from manifest_runner.resolve.resolver import Budget

    manifest_set = load_or_exit(paths)
    client = None if offline else client_or_exit(connection)
    folder = cache_folder(cache_dir, no_cache)
    resolution = resolve_set(manifest_set, client, folder, Budget.of(budget))
    for warning in resolution.warnings:
        click.echo(f"warning: {warning}", err=True)
    try:
        require_all(resolution)
    except ManifestRunnerError as err:
        fail(err)
    return manifest_set, resolution


CHILD_OPTIONS = [
    click.option(
        "--signal",
        "reload_signal",
        help="On a change, send the command this signal (e.g. SIGHUP) instead of restarting it.",
    ),
    click.option(
        "--debounce",
        type=float,
        default=1.0,
        show_default=True,
        help="Seconds of quiet after a change before restarting or signalling the command.",
    ),
    click.option(
        "--grace",
        type=float,
        default=10.0,
        show_default=True,
        help="Seconds the command has to exit after SIGTERM on a restart, before SIGKILL.",
    ),
]


def child_options(func: F) -> F:
    """The options of a supervised command (exec --watch, run -- CMD)."""
    for option in reversed(CHILD_OPTIONS):
        func = option(func)
    return func


def cache_folder(cache_dir: str | None, no_cache: bool) -> Any:
    """Where last known good values are kept: --cache-dir, else the default (env, XDG); None with --no-cache."""
    from pathlib import Path

    from manifest_runner.resolve.cache import default_cache_dir

    if no_cache:
        return None
    return Path(cache_dir) if cache_dir else default_cache_dir()
