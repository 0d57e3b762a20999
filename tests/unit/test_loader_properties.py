"""Property-based: whatever bytes or mutations of a valid manifest come in, the loader either accepts them or
raises ManifestError with located problems; it never raises anything else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from manifest_runner.errors import ManifestError, Problem
from manifest_runner.manifest.loader import parse_manifest
from tests.budget import examples

EXAMPLE = (Path(__file__).parent.parent.parent / "examples" / "billing.yaml").read_text()
ENV = {"POD_IP": "10.1.2.3", "HOSTNAME": "h1"}


def load(data: bytes) -> None:
    problems: tuple[Problem, ...] = ()
    try:
        parse_manifest(data, Path("h.yaml"), ENV)
    except ManifestError as err:
        problems = err.problems
        assert problems
    for problem in problems:
        assert problem.file == "h.yaml"
        assert problem.line >= 1
        assert problem.col >= 1
        assert problem.message


def dump(value: Any) -> bytes:
    import io

    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(value, out)
    return out.getvalue().encode()


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["10s", "1m30s", "0s", "${X}", "${POD_IP:-a}", "$${", "http://x:1/", "127.0.0.1:80", "ttl"]),
)
keys = st.one_of(
    st.sampled_from(
        [
            "version",
            "owner",
            "services",
            "name",
            "port",
            "id",
            "checks",
            "http",
            "tcp",
            "grpc",
            "ttl",
            "interval",
            "kv",
            "seed",
            "enforce",
            "prefix",
            "dependencies",
            "service",
            "format",
            "outputs",
            "env_file",
            "meta",
            "tags",
            "weights",
            "passing",
            "heartbeat",
            "every",
            "defaults",
            "address",
            "fallback",
            "strategy",
        ]
    ),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, values, max_size=6))
def test_generated_manifests(document: dict[str, Any]) -> None:
    load(dump(document))


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    load(data)


@settings(max_examples=examples(400), deadline=None)
@given(st.data())
def test_mutations_of_a_valid_manifest(data: st.DataObject) -> None:
    text = EXAMPLE
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(text)))
        action = data.draw(st.sampled_from(["delete", "insert", "replace"]))
        snippet = data.draw(
            st.sampled_from(["\t", ":", "- ", "{", "]", "&a ", "*a", "\n  ", "${", "0", "-1", "'", "\x00", "é", "~"])
        )
        if action == "delete":
            text = text[:position] + text[position + data.draw(st.integers(1, 20)) :]
        elif action == "insert":
            text = text[:position] + snippet + text[position:]
        else:
            text = text[:position] + snippet + text[position + 1 :]
    load(text.encode("utf-8", "surrogatepass"))


def test_the_unmutated_example_is_valid() -> None:
    assert parse_manifest(EXAMPLE.encode(), Path("h.yaml"), ENV).owner == "billing"


@settings(max_examples=examples(300), deadline=None)
@given(st.data())
def test_the_fast_and_the_precise_paths_agree(data: st.DataObject) -> None:
    """Whatever the libyaml path accepts, the round-trip path accepts as the same manifest."""
    from manifest_runner.errors import ManifestError
    from manifest_runner.manifest.loader import _fast_parse, _precise_parse
    from manifest_runner.manifest.screen import screen

    text = EXAMPLE
    for _ in range(data.draw(st.integers(0, 3))):
        position = data.draw(st.integers(0, len(text)))
        snippet = data.draw(st.sampled_from(["\t", " ", "- ", "#", "&a ", "*a", "\n", "'", '"', "~", ": ", "? ", "|"]))
        text = text[:position] + snippet + text[position + data.draw(st.integers(0, 2)) :]
    try:
        screened = screen(text, "h.yaml")
    except ManifestError:
        return
    fast = _fast_parse(screened.document, ENV) if screened.built else None
    if fast is not None:
        assert _precise_parse(text, "h.yaml", ENV) == fast
