"""plan, apply and destroy: what changes Consul, and what would."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from manifest_runner.cli.common import (
    EXIT_CHANGES,
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    PATHS,
    Printer,
    cli,
    client_or_exit,
    connection_options,
    desired_states,
    exit_code_for,
    fail,
    load_or_exit,
    split_connection,
)


@cli.command()
@PATHS
@click.option("--prune", is_flag=True, help="Also plan to remove the owner's services and keys no longer declared.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when changes are pending, 0 when none.")
@connection_options
def plan(paths: tuple[str, ...], prune: bool, output: str, detailed_exitcode: bool, **kwargs: Any) -> None:
    """Show what apply would change: + create, ~ update (changed fields), - delete, ! conflict. Sends no write."""
    from manifest_runner.converge.planner import PlanPolicy
    from manifest_runner.converge.reconcile import make_plan
    from manifest_runner.converge.view import plan_lines, plans_json
    from manifest_runner.errors import ManifestRunnerError

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
    from manifest_runner.converge.planner import PlanPolicy
    from manifest_runner.errors import ManifestRunnerError

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
    from manifest_runner.converge.reconcile import make_plan
    from manifest_runner.converge.view import plan_lines, plans_json

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
    from manifest_runner.converge.reconcile import converge
    from manifest_runner.converge.view import plan_lines

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
