"""plan, apply and destroy: what changes Consul, and what would."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import click

from manifest_runner.cli.common import (
    EXIT_CHANGES,
    EXIT_FAILED,
    EXIT_INVALID,
    PATHS,
    Printer,
    cli,
    client_or_exit,
    connection_options,
    exit_code_for,
    fail,
    load_or_exit,
    quiet,
    say_error,
    say_requests,
    say_warning,
    split_connection,
    verbosity_options,
)

SET_OPTION = click.option(
    "--set",
    "set_name",
    envvar="CONSUL_MANIFEST_SET",
    help="Apply set NAME: the owners these manifests apply are remembered; with --prune, an owner of the set whose "
    "manifest is gone is removed (everything it owns) [env: CONSUL_MANIFEST_SET].",
)
ADOPT_OPTION = click.option(
    "--adopt", is_flag=True, help="Take ownership of unowned services and keys that already equal the manifest."
)
TAKE_OVER_OPTION = click.option(
    "--take-over", is_flag=True, help="Move an owner recorded as applied from another repository or folder to here."
)
OUTPUT_OPTION = click.option(
    "--output", type=click.Choice(["text", "json"]), default="text", show_default=True, help="json: docs/json.md."
)
LOCK_TIMEOUT_OPTION = click.option(
    "--lock-timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for another apply of the same owner to finish.",
)


@cli.command()
@PATHS
@click.option("--prune", is_flag=True, help="Also plan to remove the owner's services and keys no longer declared.")
@SET_OPTION
@ADOPT_OPTION
@TAKE_OVER_OPTION
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Save the plan (JSON) for apply --plan FILE.")
@click.option(
    "--output",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
    help="json: docs/json.md; markdown: for a merge request comment or a CI job summary.",
)
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when changes are pending, 0 when none.")
@verbosity_options
@connection_options
def plan(
    paths: tuple[str, ...],
    prune: bool,
    set_name: str | None,
    adopt: bool,
    take_over: bool,
    out: str | None,
    output: str,
    detailed_exitcode: bool,
    **kwargs: Any,
) -> None:
    """Show what apply would change, field by field, each change labelled by its cause (the manifest changed, or
    Consul drifted): + create, ~ update, - delete, * adopt, ! conflict, = kept. Sends no write.

    \b
    Example:
      consul-manifest plan --prune --set team-a --out plan.json deploy/consul/
    """
    from manifest_runner.converge import pipeline, view
    from manifest_runner.errors import ManifestRunnerError

    manifest_set = load_or_exit(paths)
    warn_about_implicit_owners(manifest_set)
    client = client_or_exit(split_connection(kwargs))
    request = pipeline.Request(prune=prune, adopt=adopt, take_over=take_over, set_name=set_name)
    try:
        check_datacenter(client)
        found = pipeline.scope(client, manifest_set, request)
        planned = pipeline.plan_all(client, found.work)
    except ManifestRunnerError as err:
        fail(err)
    plans = [p for _, p in planned]
    document = view.document("plan", plans, extra=found.extra())
    if out is not None:
        save_plan(out, document, paths, request, found, planned)
    if output == "json":
        click.echo(view.document_text(document))
    elif output == "markdown":
        click.echo(view.markdown(document), nl=False)
    else:
        show_plans(plans, found)
    say_requests(client)
    if any(p.conflicts for p in plans):
        sys.exit(EXIT_FAILED)
    if detailed_exitcode and document["changes"]:
        sys.exit(EXIT_CHANGES)


def show_plans(plans: list[Any], found: Any) -> None:
    from manifest_runner.converge import view

    printer = Printer()
    for one, work in zip(plans, found.work, strict=True):
        lines = view.plan_lines(one)
        if work.orphan:
            lines[0] = f"owner {one.owner}: its manifest is gone from the apply set {found.apply_set.name!r}"
        if quiet():
            lines = [f"owner {one.owner}: {view.summary(one)}"]
        for line in lines:
            printer.line(line)
    for owner, folder in sorted(found.gone.items()):
        printer.line(
            f"! owner {owner}: applied from {folder or '.'}, and its manifest is gone: its services and keys are "
            "orphaned (use --set NAME to have them removed, or destroy them with a manifest naming the owner)"
        )


def warn_about_implicit_owners(manifest_set: Any) -> None:
    from manifest_runner.converge.pipeline import require_owners
    from manifest_runner.errors import ManifestError

    try:
        require_owners(manifest_set)
    except ManifestError as err:
        for problem in err.problems:
            say_warning(f"{problem} (apply will refuse this)")


def check_datacenter(client: Any) -> None:
    """Services register through the local agent, in its own datacenter: another --datacenter cannot be honoured
    for plan, apply or destroy, and is refused rather than ignored."""
    from manifest_runner.errors import ConsulRefused, SettingsError

    wanted = client.settings.datacenter
    if not wanted:
        return
    try:
        own = client.agent_self().datacenter
    except ConsulRefused as err:
        raise ConsulRefused(
            f"--datacenter {wanted}: the agent's own datacenter cannot be read (agent:read is denied), so it "
            "cannot be checked",
            operation=err.operation,
            status=err.status,
        ) from None
    if own and own != wanted:
        raise SettingsError(
            f"--datacenter {wanted}: this agent is in {own}, and services register with the local agent in its own "
            f"datacenter; run consul-manifest against an agent in {wanted}"
        )


def save_plan(
    out: str, document: dict[str, Any], paths: tuple[str, ...], request: Any, found: Any, planned: Any
) -> None:
    import json

    from manifest_runner.converge.pipeline import file_digest
    from manifest_runner.manifest.loader import manifest_files
    from manifest_runner.resolve.writer import write_atomic

    files, _ = manifest_files(paths)
    saved = {
        **document,
        "saved": {
            "paths": list(paths),
            "manifests": {str(f): file_digest(f) for f in files},
            "request": {
                "prune": request.prune,
                "adopt": request.adopt,
                "take_over": request.take_over,
                "set": request.set_name,
            },
            "fingerprints": {
                work.desired.owner: {"desired": work.desired.fingerprint(), "observed": observed.fingerprint()}
                for work, (observed, _) in zip(found.work, planned, strict=True)
            },
        },
    }
    write_atomic(out, json.dumps(saved, indent=2, default=str) + "\n", follow_any_link=True)
    click.echo(f"saved the plan to {out} (apply it with: consul-manifest apply --plan {out})", err=True)


@cli.command()
@click.argument("paths", nargs=-1, metavar="[PATH...]")
@click.option("--prune", is_flag=True, help="Remove the owner's services and keys no longer declared.")
@SET_OPTION
@ADOPT_OPTION
@TAKE_OVER_OPTION
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(dir_okay=False),
    help="Apply exactly this saved plan (plan --out); refused when Consul or the manifests changed since.",
)
@click.option("--dry-run", is_flag=True, help="Show the plan and apply nothing.")
@LOCK_TIMEOUT_OPTION
@OUTPUT_OPTION
@verbosity_options
@connection_options
def apply(
    paths: tuple[str, ...],
    prune: bool,
    set_name: str | None,
    adopt: bool,
    take_over: bool,
    plan_file: str | None,
    dry_run: bool,
    lock_timeout: float,
    output: str,
    **kwargs: Any,
) -> None:
    """Make Consul match the manifests: one line per action, then a summary. Unchanged manifests write nothing.

    \b
    Examples:
      consul-manifest apply deploy/consul/
      consul-manifest apply --plan plan.json        (exactly what was reviewed)
    """
    from manifest_runner.converge.pipeline import Request

    if plan_file is not None:
        if paths or prune or set_name or adopt or take_over:
            raise click.UsageError("--plan FILE applies the saved plan as it is: give no PATH and no other option")
        paths, request, expected = read_saved_plan(plan_file)
    elif not paths:
        raise click.UsageError("give at least one manifest PATH (or --plan FILE)")
    else:
        request, expected = Request(prune=prune, adopt=adopt, take_over=take_over, set_name=set_name), None
    converge_command(
        "apply",
        paths,
        request,
        dry_run=dry_run,
        output=output,
        lock_timeout=lock_timeout,
        connection=split_connection(kwargs),
        expected=expected,
    )


def read_saved_plan(plan_file: str) -> tuple[tuple[str, ...], Any, dict[str, Any]]:
    """The saved plan's paths, request and fingerprints; exit 3 when the file is not a saved plan, exit 1 when a
    manifest changed since it was made."""
    import json

    from manifest_runner.converge.pipeline import Request, file_digest
    from manifest_runner.converge.view import FORMAT_VERSION
    from manifest_runner.manifest.loader import manifest_files

    try:
        with Path(plan_file).open("rb") as handle:
            document = json.loads(handle.read(64 * 1024 * 1024))
        saved = document["saved"]
        paths = tuple(str(p) for p in saved["paths"])
        wanted = {str(k): str(v) for k, v in saved["manifests"].items()}
        req = saved["request"]
        request = Request(
            prune=bool(req["prune"]), adopt=bool(req["adopt"]), take_over=bool(req["take_over"]), set_name=req["set"]
        )
        fingerprints = {str(k): dict(v) for k, v in saved["fingerprints"].items()}
        usable = document.get("format_version") == FORMAT_VERSION and not document.get("conflicts")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        say_error(f"{plan_file} is not a saved plan this version can apply ({type(err).__name__}: {err})")
        sys.exit(EXIT_INVALID)
    if not usable:
        say_error(f"{plan_file} is a plan of another format version, or one with conflicts: it cannot be applied")
        sys.exit(EXIT_INVALID)
    files, _ = manifest_files(paths)
    now = {str(f): file_digest(f) for f in files if f.is_file()}
    if now != wanted:
        changed = sorted(set(now) ^ set(wanted) | {f for f in now if wanted.get(f) != now[f]})
        say_error(f"the manifests changed since the plan was made ({', '.join(changed)}): nothing was written")
        sys.exit(EXIT_FAILED)
    return paths, request, fingerprints


@cli.command()
@PATHS
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (needed when stdin is not a terminal).")
@click.option("--dry-run", is_flag=True, help="Show what would be removed and remove nothing.")
@LOCK_TIMEOUT_OPTION
@OUTPUT_OPTION
@verbosity_options
@connection_options
def destroy(paths: tuple[str, ...], yes: bool, dry_run: bool, lock_timeout: float, output: str, **kwargs: Any) -> None:
    """Remove everything these manifests' owners created (their services on this agent, their keys, their records
    and locks), nothing else.

    \b
    Example:
      consul-manifest destroy --yes deploy/consul/billing.yaml
    """
    from manifest_runner.converge.pipeline import Request

    if not (yes or dry_run):
        if not sys.stdin.isatty():
            say_error("destroy removes every service and key these owners created; pass --yes to confirm")
            sys.exit(EXIT_INVALID)
        click.confirm("Remove everything these manifests' owners created?", abort=True)
    converge_command(
        "destroy",
        paths,
        Request(prune=True, destroy=True),
        dry_run=dry_run,
        output=output,
        lock_timeout=lock_timeout,
        connection=split_connection(kwargs),
        expected=None,
    )


def converge_command(
    command: str,
    paths: tuple[str, ...],
    request: Any,
    *,
    dry_run: bool,
    output: str,
    lock_timeout: float,
    connection: dict[str, Any],
    expected: dict[str, Any] | None,
) -> None:
    """apply and destroy: validate everything, then converge every owner (several at once, each under its own
    lock); exit with the documented code."""
    from manifest_runner.converge import pipeline, view
    from manifest_runner.errors import ManifestError, ManifestRunnerError

    manifest_set = load_or_exit(paths)
    try:
        pipeline.require_owners(manifest_set)
    except ManifestError as err:
        load_or_exit_problems(err)
    client = client_or_exit(connection)
    printer = Printer()
    say = printer.line if output == "text" else (lambda _text: None)
    lock = threading.Lock()

    def done(work: Any, outcome: Any) -> None:
        with lock:
            for line in outcome_lines(work, outcome):
                say(line)

    try:
        check_datacenter(client)
        found = pipeline.scope(client, manifest_set, request)
        if expected is not None:
            refuse_stale_desired(found, expected)
        if dry_run:
            plans = [p for _, p in pipeline.plan_all(client, found.work)]
            if output == "json":
                click.echo(view.document_text(view.document(command, plans, extra={**found.extra(), "dry_run": True})))
            else:
                show_plans(plans, found)
                say("dry run: nothing was applied")
            sys.exit(EXIT_FAILED if any(p.conflicts for p in plans) else 0)
        observed = None if expected is None else {o: f["observed"] for o, f in expected.items()}
        with ApplyProgress(enabled=output == "text" and not quiet()) as progress:
            outcomes = pipeline.apply_all(
                client,
                found.work,
                lock_timeout=lock_timeout,
                on_done=progress.wrap(done),
                on_result=progress.advance,
                expected=observed,
            )
        set_ok = pipeline.update_set(client, found, outcomes) if all(o.ok for o in outcomes) else True
    except ManifestRunnerError as err:
        fail(err)
    if output == "json":
        reports = {o.plan.owner: o.report.to_json() if o.report else None for o in outcomes}
        click.echo(view.document_text(view.document(command, [o.plan for o in outcomes], reports, found.extra())))
    for owner, folder in sorted(found.gone.items()):
        say(f"! owner {owner}: applied from {folder or '.'}, and its manifest is gone: orphaned (use --set NAME)")
    say_requests(client)
    errors = [o.report.error for o in outcomes if o.report is not None and o.report.error is not None]
    if errors:
        say_error(str(errors[0]))
        sys.exit(exit_code_for(errors[0]))
    if not all(o.ok for o in outcomes):
        sys.exit(EXIT_FAILED)
    if not set_ok:
        say_error(f"the apply set {request.set_name!r} was changed by someone else meanwhile; apply again")
        sys.exit(EXIT_FAILED)


def refuse_stale_desired(found: Any, expected: dict[str, Any]) -> None:
    """A saved plan whose manifests changed since: exit 1, nothing written."""
    stale = [
        w.desired.owner
        for w in found.work
        if expected.get(w.desired.owner, {}).get("desired") != w.desired.fingerprint()
    ]
    if stale or set(expected) != {w.desired.owner for w in found.work}:
        say_error(
            f"the plan no longer matches the manifests (owners {', '.join(stale) or 'differ'}): nothing was written"
        )
        sys.exit(EXIT_FAILED)


class ApplyProgress:
    """A progress bar on stderr for applies of more than a few dozen actions, on a terminal only."""

    THRESHOLD = 24

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty() and not os.environ.get("NO_COLOR")
        self.done = 0
        self.progress: Any = None
        self.task: Any = None
        self.lock = threading.Lock()

    def __enter__(self) -> ApplyProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def advance(self, _result: Any) -> None:
        if not self.enabled:
            return
        with self.lock:
            self.done += 1
            if self.progress is None and self.done >= self.THRESHOLD:
                from rich.console import Console
                from rich.progress import Progress, SpinnerColumn, TextColumn

                self.progress = Progress(
                    SpinnerColumn(), TextColumn("applying: {task.completed} actions done"), console=Console(stderr=True)
                )
                self.task = self.progress.add_task("apply", total=None, completed=self.done)
                self.progress.start()
            elif self.progress is not None:
                self.progress.update(self.task, completed=self.done)

    def wrap(self, done: Any) -> Any:
        def inner(work: Any, outcome: Any) -> None:
            if self.progress is not None:
                with self.lock:
                    self.progress.stop()
                    self.progress = None
                    self.done = 0
            done(work, outcome)

        return inner


def outcome_lines(work: Any, outcome: Any) -> list[str]:
    from manifest_runner.converge import view

    owner, report = outcome.plan.owner, outcome.report
    if outcome.plan.conflicts and report is None:
        return [*view.plan_lines(outcome.plan), f"{owner}: not applied: {len(outcome.plan.conflicts)} conflicts"]
    lines = [f"owner {owner}: its manifest is gone from the apply set, removing what it owns"] if work.orphan else []
    kept = [
        f"  = {kind} {target}  (kept: no longer declared; --prune removes it)" for kind, target in outcome.plan.kept
    ]
    if report is None:
        return [*lines, *kept, f"{owner}: no changes"]
    lines += ["  " + result.line() for result in report.results]
    lines += kept
    if quiet():
        return [report.summary()]
    return [*lines, report.summary()]


def load_or_exit_problems(err: Any) -> None:
    from manifest_runner.util.text import printable

    for problem in err.problems:
        click.echo(printable(str(problem), 4000), err=True)
    click.echo(f"invalid: {len(err.problems)} problems; nothing was sent to Consul", err=True)
    sys.exit(EXIT_INVALID)
