"""render and exec: the dependencies resolved once, for a container's boot (or kept current: exec --watch)."""

from __future__ import annotations

import sys
from typing import Any

import click

from manifest_runner.cli.common import (
    PATHS,
    boot_client,
    boot_connection_options,
    boot_options,
    cache_folder,
    child_options,
    child_timing,
    cli,
    fail,
    load_or_exit,
    resolve_or_exit,
    say_error,
    say_info,
    say_requests,
    say_warning,
    split_command,
    split_connection,
    verbosity_options,
)


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
@click.option(
    "--report",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: what was written and where each value came from, as one document on stdout; docs/json.md.",
)
@verbosity_options
@boot_options
@boot_connection_options
def render(
    paths: tuple[str, ...],
    fmt: str | None,
    output: str | None,
    report: str,
    budget: float,
    cache_dir: str | None,
    no_cache: bool,
    offline: bool,
    **kwargs: Any,
) -> None:
    """Resolve the dependencies once and write the outputs and templates (for container boot).

    Sources, in order: Consul (healthy instances only), the last known good value, the static fallback.
    Files are replaced atomically and only when their bytes change. Exit 1 if a required dependency has no value
    (nothing is written then) or a template fails (its file is kept).

    \b
    Examples:
      consul-manifest render deploy/app.yaml
      consul-manifest render -o - --format docker deploy/app.yaml > app.env
      consul-manifest render --report json deploy/app.yaml | jq '.dependencies'
    """
    from manifest_runner.errors import ManifestRunnerError
    from manifest_runner.resolve.delivery import render_templates, write_one, write_outputs

    connection = split_connection(kwargs)
    manifest_set, resolution, client, folder = resolve_or_exit(paths, budget, cache_dir, no_cache, offline, connection)
    has_templates = any(m.manifest.outputs.templates for m in manifest_set.manifests)
    if report == "json" and output == "-":
        raise click.UsageError("--report json prints the report on stdout: write the values with -o FILE")
    written: list[dict[str, Any]] = []
    try:
        if output is not None or not any(
            m.manifest.outputs.env_file or m.manifest.outputs.json_file or m.manifest.outputs.yaml_file or has_templates
            for m in manifest_set.manifests
        ):
            if report == "json" and output is None:
                raise click.UsageError("--report json prints the report on stdout: write the values with -o FILE")
            changed = write_one(resolution, output or "-", fmt, lambda text: click.echo(text, nl=False))
            if output not in (None, "-"):
                say_info(f"wrote {output}")
                written.append({"path": output, "written": changed})
        else:
            for path, changed in write_outputs(manifest_set, resolution):
                say_info(f"{'wrote' if changed else 'unchanged'} {path}")
                written.append({"path": str(path), "written": changed})
    except ManifestRunnerError as err:
        fail(err)
    failed, templates = _templates(render_templates(manifest_set, resolution, client, folder))
    if report == "json":
        import json

        document = {
            "format_version": 1,
            "command": "render",
            "ok": not failed,
            "outputs": written,
            "templates": templates,
            "dependencies": {item.name: item.to_json() for item in resolution.all},
            "warnings": list(resolution.warnings),
        }
        click.echo(json.dumps(document, indent=2, default=str))
    say_requests(client)
    if failed:
        sys.exit(1)


def _templates(outcomes: list[Any]) -> tuple[bool, list[dict[str, Any]]]:
    """Say what happened to each template; (whether any failed, the report's entries)."""
    failed = False
    templates: list[dict[str, Any]] = []
    for outcome in outcomes:
        templates.append(
            {
                "destination": str(outcome.destination),
                "written": outcome.changed,
                "error": outcome.error,
                "command_exit": outcome.command_exit,
                "fallbacks": list(outcome.fallbacks),
            }
        )
        for fallback in outcome.fallbacks:
            say_warning(f"{outcome.destination}: {fallback}")
        if outcome.error is not None:
            say_error(f"{outcome.destination}: not rendered: {outcome.error}")
            failed = True
            continue
        say_info(f"{'wrote' if outcome.changed else 'unchanged'} {outcome.destination}")
        if outcome.command_exit not in (None, 0):
            say_error(f"{outcome.destination}: the command exited {outcome.command_exit}")
            failed = True
    return failed, templates


@cli.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--watch", is_flag=True, help="Keep watching Consul; on a change, restart the command (or signal it).")
@child_options
@boot_options
@boot_connection_options
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED, metavar="PATH... -- CMD [ARG...]")
def exec_(
    arguments: tuple[str, ...],
    watch: bool,
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
    """Resolve the dependencies, then run CMD with them in its environment.

    Without --watch, consul-manifest replaces itself with CMD: signals reach it directly and its exit code is the
    exit code. With --watch, CMD runs as a child: signals are forwarded, and when a value changes the child is
    restarted (or sent --signal) once changes settle (--wait); the exit code is the child's.
    CONSUL_HTTP_TOKEN is not passed on to CMD unless --pass-token. Options go before the manifest paths.

    \b
    Examples:
      consul-manifest exec app.yaml -- ./server --port 8080
      consul-manifest exec --watch --signal SIGHUP --wait 2s:10s app.yaml -- nginx -g 'daemon off;'
      consul-manifest exec --pristine app.yaml -- env
    """
    if "--" not in arguments:
        raise click.UsageError("separate the command with --: consul-manifest exec [OPTIONS] PATH... -- CMD [ARG...]")
    paths, command = split_command(arguments)
    if not command:
        raise click.UsageError("give a CMD after --")
    connection = split_connection(kwargs)
    if watch:
        boot = {"budget": budget, "cache_dir": cache_dir, "no_cache": no_cache, "offline": offline}
        timing = child_timing(wait, splay, debounce)
        child = {
            "reload_signal": reload_signal,
            "kill_signal": kill_signal,
            "grace": grace,
            "pass_token": pass_token,
            "pristine": pristine,
            **timing,
        }
        sys.exit(_exec_watch(paths, list(command), boot, child, connection))
    import os

    from manifest_runner.resolve.delivery import child_environment

    _, resolution, _, _ = resolve_or_exit(paths, budget, cache_dir, no_cache, offline, connection)
    environment = child_environment(
        [r for r in resolution.all if r.value is not None], pass_token=pass_token, pristine=pristine
    )
    sys.stdout.flush()
    sys.stderr.flush()
    import shutil

    program = shutil.which(command[0]) or command[0]  # looked up on our PATH: a pristine environment has none
    try:
        if "/" in program:
            os.execve(program, list(command), environment)  # noqa: S606 - no shell: the user's argv as given
        else:
            os.execvpe(command[0], list(command), environment)  # noqa: S606 - no shell: the user's argv as given
    except FileNotFoundError:
        say_error(f"{command[0]}: command not found")
        sys.exit(127)
    except PermissionError:
        say_error(f"{command[0]}: permission denied")
        sys.exit(126)


def _exec_watch(
    paths: tuple[str, ...], command: list[str], boot: dict[str, Any], child: dict[str, Any], connection: dict[str, Any]
) -> int:
    """exec --watch: the runner's loop without applying (resolve, supervise, forward signals)."""
    from manifest_runner.run.runner import Runner, RunOptions
    from manifest_runner.run.supervisor import ChildOptions, signal_number
    from manifest_runner.run.telemetry import configure_logging

    try:
        reload_number = signal_number(child["reload_signal"])
    except ValueError:
        raise click.BadParameter(f"unknown signal {child['reload_signal']!r}", param_hint="--signal") from None
    try:
        kill_number = signal_number(child["kill_signal"]) or 15
    except ValueError:
        raise click.BadParameter(f"unknown signal {child['kill_signal']!r}", param_hint="--kill-signal") from None
    manifest_set = load_or_exit(paths)
    client, offline_reason = boot_client(connection, boot["offline"])
    configure_logging("plain", "info")
    options = RunOptions(
        apply=False,
        require_values=True,
        budget=boot["budget"],
        cache_dir=cache_folder(boot["cache_dir"], boot["no_cache"]),
        child=ChildOptions(
            command,
            reload_number,
            wait_min=child["wait_min"],
            wait_max=child["wait_max"],
            grace=child["grace"],
            pass_token=child["pass_token"],
            splay=child["splay"],
            pristine=child["pristine"],
            kill_signal=kill_number,
        ),
        offline_reason=offline_reason,
    )
    try:
        return Runner(manifest_set, paths, client, options).run()
    except FileNotFoundError:
        say_error(f"{command[0]}: command not found")
        return 127
