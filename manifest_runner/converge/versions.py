"""What a desired state needs of the Consul it goes to: fields newer than the agent are refused before anything
is sent, naming the version they need, instead of being sent and dropped or refused half-way (pure).

Consul 1.8's agent refuses an unknown check field outright (``json: unknown field "TLSServerName"``), but a field
it knows and ignores would be silently dropped; either way the manifest would not be what Consul has.
"""

from __future__ import annotations

import re

from manifest_runner.converge.state import DesiredState

CHECK_FIELDS = {
    "TLSServerName": ("tls_server_name", (1, 10, 0)),
    "H2PING": ("h2ping", (1, 10, 0)),
}
"""Check fields (the agent API's name) -> (the manifest's name, the first Consul version that takes it)."""


def parse_version(text: str) -> tuple[int, int, int]:
    """``1.8.7``, ``v1.10.0-beta``, ``1.11.2+ent`` -> (1, 8, 7)."""
    numbers = [int(n) for n in re.findall(r"\d+", text.split("+", 1)[0].split("-", 1)[0])[:3]]
    major, minor, patch = [*numbers, 0, 0, 0][:3]
    return major, minor, patch


def gated(desired: DesiredState) -> bool:
    """Whether ``desired`` uses any field that some Consul versions do not take (only then is the version asked)."""
    return any(name in check.fields() for s in desired.services for check in s.checks for name in CHECK_FIELDS)


def unsupported(desired: DesiredState, version: str) -> list[str]:
    """Every field of ``desired`` that the Consul of ``version`` does not take, one line each."""
    have = parse_version(version)
    problems = []
    for service in desired.services:
        for check in service.checks:
            for field_name, (manifest_name, needed) in CHECK_FIELDS.items():
                if field_name in check.fields() and have < needed:
                    problems.append(
                        f"service {service.service_id}, check {check.check_id}: {manifest_name} needs Consul "
                        f"{'.'.join(map(str, needed))} or later; this agent is {version}"
                    )
    return problems
