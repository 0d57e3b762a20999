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
    if isinstance(
        error,
        errors.ConsulUnavailable | errors.ConsulRefused | errors.ConsulProtocolError | errors.ConsulUnsupportedFeature,
    ):
        return EXIT_CONSUL
    return EXIT_FAILED


def say_error(text: str) -> None:
    """An error line on stderr: untrusted text escaped, any known secret redacted."""
    from manifest_runner.util.secrets import redact
    from manifest_runner.util.text import printable

    click.echo(f"error: {redact(printable(text, 4000))}", err=True)


def fail(error: BaseException) -> NoReturn:
    """Print an error the way a user can act on it (no traceback) and exit with its code."""
    say_error(str(error))
    sys.exit(exit_code_for(error))


class Commands(click.Group):
    """The command group, with one outer edge for every command: a usage error exits 3 (never click's 2, which
    ``plan --detailed-exitcode`` uses for "changes pending"); an error of ours exits with its documented code; and
    anything unexpected is one line (``CONSUL_MANIFEST_DEBUG=1`` adds the traceback, redacted), never a traceback."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        from manifest_runner.errors import ManifestRunnerError

        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(EXIT_FAILED)
        except click.ClickException as err:
            err.show()
            sys.exit(EXIT_INVALID if isinstance(err, click.UsageError) else err.exit_code)
        except ManifestRunnerError as err:
            fail(err)
        except KeyboardInterrupt:
            sys.exit(130)
        except BrokenPipeError:  # the reader of our output went away (| head): nothing left to say
            sys.exit(EXIT_FAILED)
        except Exception as err:  # noqa: BLE001 - the last line of defence: a user never sees a traceback
            _internal_error(err)
        sys.exit(result if isinstance(result, int) else EXIT_OK)


def _internal_error(err: Exception) -> NoReturn:
    import os
    import traceback

    from manifest_runner.util.secrets import redact

    say_error(f"internal error ({type(err).__name__}): {err}; please report it, with CONSUL_MANIFEST_DEBUG=1 output")
    if os.environ.get("CONSUL_MANIFEST_DEBUG") == "1":
        click.echo(redact("".join(traceback.format_exception(err))), err=True)
    sys.exit(EXIT_FAILED)


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
        click.option("--namespace", help="Consul Enterprise namespace [env: CONSUL_NAMESPACE]."),
        click.option("--partition", help="Consul Enterprise admin partition [env: CONSUL_PARTITION]."),
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
    "namespace",
    "partition",
    "timeout",
)


def split_connection(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the connection flags out of a command's keyword arguments."""
    return {key: kwargs.pop(key, None) for key in CONNECTION_KEYS}


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "--version", "-V", prog_name="consul-manifest", message="%(prog)s %(version)s")
def cli() -> None:
    """Declarative service manifests for HashiCorp Consul.

    Register services with their health checks, seed and enforce KV configuration, resolve dependencies into an
    env file or a child's environment, and keep all of it converged.

    \b
    Exit codes: 0 ok (plan: no changes), 1 failed, 2 plan --detailed-exitcode: changes pending,
                3 invalid manifest, settings or command-line usage (nothing was sent to Consul),
                4 Consul unreachable, refusing (ACL, TLS) or not answering like Consul.
    """
    VERBOSITY["level"] = 0  # each invocation starts at the default (the CLI can run several times in one process)
    _verbose_logging(False)


class ListenAddress(click.ParamType[str]):
    """``HOST:PORT`` for the status endpoint, checked when the command line is read (a usage error, exit 3)."""

    name = "HOST:PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from manifest_runner.run.telemetry import parse_listen

        try:
            parse_listen(str(value))
        except ValueError as err:
            self.fail(str(err), param, ctx)
        return str(value)


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
        from manifest_runner.util.text import printable

        for problem in err.problems:
            click.echo(printable(str(problem), 4000), err=True)
        count = len(err.problems)
        click.echo(f"invalid: {count} problem{'s' if count != 1 else ''}; nothing was sent to Consul", err=True)
        sys.exit(EXIT_INVALID)


def client_or_exit(connection: dict[str, Any]) -> Any:
    """A Consul client from flags over the environment; invalid settings exit 3."""
    from manifest_runner.consul.client import ConsulClient
    from manifest_runner.errors import SettingsError

    warn_about_token_flag(connection)
    try:
        return ConsulClient.from_env(**connection)
    except SettingsError as err:
        fail(err)


def boot_client(connection: dict[str, Any], offline: bool) -> tuple[Any, str]:
    """For render and exec: a client, or None and why Consul will not be asked. Invalid settings (a token that
    cannot be sent, a missing CA file) do not stop a container's boot: the values come from the cache and the
    fallbacks, and the reason is printed with every value that did not come from Consul."""
    from manifest_runner.consul.client import ConsulClient
    from manifest_runner.errors import SettingsError

    if offline:
        return None, "Consul was not asked (--offline)"
    warn_about_token_flag(connection)
    try:
        return ConsulClient.from_env(**connection), ""
    except SettingsError as err:
        say_warning(f"Consul will not be asked: {err}")
        return None, f"Consul was not asked: invalid settings ({err})"


def warn_about_token_flag(connection: dict[str, Any]) -> None:
    if connection.get("token"):
        say_warning(
            "--token is visible to other users of this host in the process list; "
            "prefer --token-file or CONSUL_HTTP_TOKEN"
        )


VERBOSITY = {"level": 0}
"""-1 with --quiet (errors and the product only), 0 by default, 1+ with --verbose (debug logs, request counts)."""


def _set_quiet(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        VERBOSITY["level"] = -1


def _set_verbose(_ctx: click.Context, _param: click.Parameter, value: int) -> None:
    if value:
        VERBOSITY["level"] = value
        _verbose_logging(True)


def _verbose_logging(on: bool) -> None:
    """Debug logs of consul-manifest's own loggers on stderr (on), or none of that (off)."""
    import logging

    logger = logging.getLogger("consul_manifest")
    for handler in [h for h in logger.handlers if getattr(h, "verbose", False)]:
        logger.removeHandler(handler)
    if on:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("debug: %(name)s: %(message)s"))
        handler.verbose = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    else:
        logger.setLevel(logging.NOTSET)


def verbosity_options(func: F) -> F:
    """--quiet and --verbose."""
    func = click.option(
        "--verbose",
        "-v",
        count=True,
        expose_value=False,
        callback=_set_verbose,
        help="Say more: debug logs, and the requests sent to Consul.",
    )(func)
    return click.option(
        "--quiet",
        "-q",
        is_flag=True,
        expose_value=False,
        callback=_set_quiet,
        help="Say less: errors, and for plan and apply each owner's summary only.",
    )(func)


def quiet() -> bool:
    return VERBOSITY["level"] < 0


def say_info(text: str) -> None:
    """An informational line on stderr (``wrote X``), unless --quiet."""
    if not quiet():
        click.echo(text, err=True)


def say_requests(client: Any) -> None:
    """With --verbose: how many requests were sent, by method and path."""
    if VERBOSITY["level"] > 0 and client is not None:
        counts = client.request_counts(by_path=True)
        total = sum(counts.values())
        click.echo(f"requests to Consul: {total}", err=True)
        for operation, count in sorted(counts.items()):
            click.echo(f"  {count:5d} {operation}", err=True)


def say_warning(text: str) -> None:
    from manifest_runner.util.secrets import redact
    from manifest_runner.util.text import printable

    click.echo(f"warning: {redact(printable(text, 4000))}", err=True)


class Printer:
    """Lines to stdout, coloured by their leading symbol when stdout is a terminal (rich), plain otherwise."""

    STYLES: ClassVar[dict[str, str]] = {"+": "green", "~": "yellow", "-": "red", "!": "bold red"}

    def __init__(self) -> None:
        self.console: Any = None
        if sys.stdout.isatty():
            from rich.console import Console

            self.console = Console(highlight=False, soft_wrap=True)

    def line(self, text: str) -> None:
        from manifest_runner.util.text import printable

        text = printable(text, 4000)  # a value from Consul can hold escapes and direction overrides
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
) -> tuple[Any, Any, Any, Any]:
    """Validate, then resolve every dependency within ``budget`` seconds; print warnings; exit 1 when a required
    dependency resolved from nothing (naming each one). Returns the set, the resolution, the client (None
    offline) and the cache folder."""

    from manifest_runner.errors import ManifestRunnerError
    from manifest_runner.resolve.delivery import require_all, resolve_set
    from manifest_runner.resolve.resolver import Budget

    manifest_set = load_or_exit(paths)
    client, offline_reason = boot_client(connection, offline)
    folder = cache_folder(cache_dir, no_cache)
    resolution = resolve_set(manifest_set, client, folder, Budget.of(budget), offline_reason=offline_reason)
    for warning in resolution.warnings:
        say_warning(warning)
    try:
        require_all(resolution)
    except ManifestRunnerError as err:
        fail(err)
    return manifest_set, resolution, client, folder


CHILD_OPTIONS = [
    click.option(
        "--signal",
        "reload_signal",
        help="On a change, send the command this signal (e.g. SIGHUP) instead of restarting it.",
    ),
    click.option(
        "--wait",
        "wait",
        default="1s",
        show_default=True,
        metavar="MIN[:MAX]",
        help="Act on a change once changes settle: after MIN of quiet, at the latest MAX after the first change "
        "(default MAX: 4 x MIN), so a burst is one restart or signal. 0: at once.",
    ),
    click.option(
        "--splay",
        default="0s",
        show_default=True,
        metavar="DURATION",
        help="Wait a random time up to this before restarting or signalling (spreads a fleet's restarts).",
    ),
    click.option("--debounce", type=float, default=None, hidden=True, help="Deprecated: --wait SECONDS."),
    click.option(
        "--grace",
        type=float,
        default=10.0,
        show_default=True,
        help="Seconds the command has to exit after SIGTERM on a restart, before SIGKILL.",
    ),
    click.option(
        "--pristine",
        is_flag=True,
        help="Give the command only the resolved variables, not consul-manifest's own environment (envconsul's).",
    ),
    click.option(
        "--kill-signal",
        default="SIGTERM",
        show_default=True,
        help="The signal that stops the command on a restart (then SIGKILL after --grace).",
    ),
    click.option(
        "--pass-token",
        is_flag=True,
        help="Pass CONSUL_HTTP_TOKEN and CONSUL_HTTP_TOKEN_FILE on to the command (removed from its environment "
        "otherwise).",
    ),
]


def child_timing(wait: str, splay: str, debounce: float | None) -> dict[str, float]:
    """--wait, --splay (and the deprecated --debounce) as ChildOptions fields; a usage error when malformed."""
    from manifest_runner.util.durations import parse_duration
    from manifest_runner.util.quiescence import parse_wait

    try:
        low, high = parse_wait(f"{debounce}s" if debounce is not None else wait)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--wait") from None
    try:
        spread = 0.0 if splay.strip() in ("0", "") else parse_duration(splay)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--splay") from None
    return {"wait_min": low, "wait_max": high, "splay": spread}


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
