"""Plans and apply reports as text a person reads in a review, or JSON a pipeline reads (pure).

Text: one line per action (``+`` create, ``~`` update, ``-`` delete, ``*`` adopt, ``!`` conflict, ``=`` kept), its
cause (the manifest changed, Consul drifted, or both), and for a service every field that changes, checks included.
JSON: one versioned document for ``plan``, ``apply`` and ``destroy`` (:data:`FORMAT_VERSION`, ``docs/json.md``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from manifest_runner.converge.planner import Action, Plan

FORMAT_VERSION = 1
SYMBOLS = {"create": "+", "update": "~", "delete": "-", "conflict": "!", "adopt": "*"}


def show_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def action_lines(action: Action) -> list[str]:
    head = f"{SYMBOLS[action.op]} {action.kind} {action.target}"
    if action.op == "conflict":
        return [f"{head}: CONFLICT: {action.reason}; nothing is applied for this owner"]
    if action.kind == "kv" and action.op == "create" and action.changes:
        return [f"{head} = {show_value(action.changes[0].new)}  ({action.reason})"]
    if action.kind == "kv" and action.op == "update" and action.changes:
        change = action.changes[0]
        return [f"{head}: {show_value(change.old)} -> {show_value(change.new)}  ({action.reason})"]
    lines = [f"{head}  ({action.reason})"]
    for change in action.changes:
        cause = f"  ({change.cause})" if change.cause and change.cause != action.cause else ""
        lines.append(f"      {change.field}: {show_value(change.old)} -> {show_value(change.new)}{cause}")
    return lines


def plan_lines(plan: Plan) -> list[str]:
    lines = [f"owner {plan.owner}:"]
    if not plan.has_changes and not plan.kept and not plan.notes:
        return [*lines, "  no changes"]
    for action in plan.actions:
        lines += ["  " + line for line in action_lines(action)]
    for kind, target in plan.kept:
        lines.append(f"  = {kind} {target}  (kept: no longer declared; --prune removes it)")
    for key in plan.forgotten:
        lines.append(f"  - record {key}  (forget: no longer exists or was re-created by someone else)")
    lines += [f"  note: {note}" for note in plan.notes]
    return [*lines, "  " + summary(plan)]


def summary(plan: Plan) -> str:
    counts = plan.counts()
    text = f"{counts['create']} to create, {counts['update']} to update, {counts['delete']} to delete"
    if counts["adopt"]:
        text += f", {counts['adopt']} to adopt"
    if counts["kept"]:
        text += f", {counts['kept']} kept"
    if counts["conflict"]:
        text += f", {counts['conflict']} conflicts (nothing will be applied for this owner)"
    return text


def document(
    command: str,
    plans: Sequence[Plan],
    reports: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON document of ``plan``, ``apply`` and ``destroy``: per owner its plan and, after an apply, its report
    (``reports``: owner -> report JSON). ``extra``: command-level fields (the apply set, orphans, fingerprints)."""
    owners = []
    for plan in plans:
        entry = plan.to_json()
        if reports is not None:
            entry["report"] = reports.get(plan.owner)
        owners.append(entry)
    ok = reports is None or all(r is None or r.get("ok", False) for r in reports.values())
    return {
        "format_version": FORMAT_VERSION,
        "command": command,
        "changes": any(p.has_changes for p in plans),
        "conflicts": any(p.conflicts for p in plans),
        "ok": ok and not any(p.conflicts for p in plans),
        "owners": owners,
        **(extra or {}),
    }


def document_text(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, default=str, ensure_ascii=False, sort_keys=False)


def _cell(text: Any) -> str:
    """A value made safe for a Markdown table cell: control characters escaped, pipes and backticks neutralised."""
    from manifest_runner.util.text import printable

    value = printable(text if isinstance(text, str) else show_value(text), 300)
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("`", "'").replace("<", "&lt;")


def markdown(document: Mapping[str, Any]) -> str:
    """A plan as Markdown, for a merge request comment or a CI job summary."""
    lines = [f"## consul-manifest {document.get('command', 'plan')}", ""]
    owners = document.get("owners", [])
    if not owners:
        return "\n".join([*lines, "No owners.", ""])
    for owner in owners:
        counts = owner["counts"]
        head = (
            f"### owner `{_cell(owner['owner'])}`: {counts['create']} to create, {counts['update']} to update, "
            f"{counts['delete']} to delete"
        )
        if counts.get("adopt"):
            head += f", {counts['adopt']} to adopt"
        if counts.get("conflict"):
            head += f", **{counts['conflict']} conflicts: nothing will be applied for this owner**"
        lines += [head, ""]
        if not owner["actions"] and not owner["kept"]:
            lines += ["No changes.", ""]
            continue
        lines += ["| | kind | target | cause | what |", "|---|---|---|---|---|"]
        for action in owner["actions"]:
            what = _cell(action["reason"])
            for change in action.get("changes", []):
                what += f"<br>`{_cell(change['field'])}`: {_cell(change['old'])} → {_cell(change['new'])}"
            lines.append(
                f"| {SYMBOLS[action['op']]} | {action['kind']} | `{_cell(action['target'])}` | "
                f"{_cell(action.get('cause', ''))} | {what} |"
            )
        for kept in owner["kept"]:
            lines.append(f"| = | {kept['kind']} | `{_cell(kept['target'])}` | | kept: no longer declared |")
        lines.append("")
        lines += [f"> note: {_cell(note)}" for note in owner.get("notes", [])]
    return "\n".join(lines) + "\n"
