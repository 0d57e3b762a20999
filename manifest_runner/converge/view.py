"""Plans and apply reports as text a person reads in a review, or JSON a pipeline reads (pure)."""

from __future__ import annotations

import json
from typing import Any

from manifest_runner.converge.planner import Action, Plan

SYMBOLS = {"create": "+", "update": "~", "delete": "-", "conflict": "!"}


def show_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def action_lines(action: Action) -> list[str]:
    head = f"{SYMBOLS[action.op]} {action.kind} {action.target}"
    if action.op == "conflict":
        return [f"{head}: CONFLICT: {action.reason}; it is left untouched"]
    if action.kind == "kv" and action.op == "create" and action.changes:
        return [f"{head} = {show_value(action.changes[0].new)}  ({action.reason})"]
    if action.kind == "kv" and action.op == "update" and action.changes:
        change = action.changes[0]
        return [f"{head}: {show_value(change.old)} -> {show_value(change.new)}  ({action.reason})"]
    lines = [f"{head}  ({action.reason})"]
    lines += [f"      {c.field}: {show_value(c.old)} -> {show_value(c.new)}" for c in action.changes]
    return lines


def plan_lines(plan: Plan) -> list[str]:
    lines = [f"owner {plan.owner}:"]
    if not plan.has_changes:
        return [*lines, "  no changes"]
    for action in plan.actions:
        lines += ["  " + line for line in action_lines(action)]
    for key in plan.forgotten:
        lines.append(f"  - record {key}  (forget: no longer exists or was re-created by someone else)")
    counts = plan.counts()
    summary = f"  {counts['create']} to create, {counts['update']} to update, {counts['delete']} to delete"
    if counts["conflict"]:
        summary += f", {counts['conflict']} conflicts (nothing will be applied for this owner)"
    return [*lines, summary]


def plans_json(plans: list[Plan]) -> str:
    return json.dumps(
        {"changes": any(p.has_changes for p in plans), "owners": [p.to_json() for p in plans]},
        indent=2,
        default=str,
    )
