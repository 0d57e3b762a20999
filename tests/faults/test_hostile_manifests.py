"""Generated hostile manifests: tags, anchors and recursive aliases, deep nesting, odd keys, control characters,
interpolation puzzles, huge values, several documents, broken encodings, mutations of a valid manifest.

More than 10,000 examples: each is either valid, or refused with every problem located (file, line >= 1, column
>= 1, a message); nothing else is ever raised. A sample goes through the command line too, against a recording
server standing where Consul would be: an invalid manifest exits 3 without a traceback and sends no request at all.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manifest_runner.cli import cli
from manifest_runner.errors import ManifestError
from manifest_runner.manifest.loader import parse_manifest
from tests.budget import examples
from tests.faults.proxy import count

ENV = {"POD_IP": "10.1.2.3", "HOSTNAME": "h1", "EMPTY": ""}
VALID = (Path(__file__).parent.parent.parent / "examples" / "billing.yaml").read_text()

FRAGMENTS = [
    "!!python/object/apply:os.system ['touch /tmp/x']",
    "!!python/tuple [1, 2]",
    "!!str 5",
    "!custom value",
    "&a [1, *a]",
    "&b {k: *b}",
    "&c x",
    "*c",
    "*undefined",
    "? [a, b]\n  : 1",
    "? {a: 1}\n  : 2",
    "[" * 70 + "]" * 70,
    "{" * 70 + "}" * 70,
    "[[[[[[[[",
    "${A:-${B:-${C:-z}}}",
    "${NOPE}",
    "${A:-${NOPE}}",
    "$${literal}",
    "${1BAD}",
    "${A-b}",
    "${",
    '"\\x00 nul"',
    '"\\u202e rlo"',
    '"\\e[31m"',
    "'line1\n  line2'",
    "|\n    block\n    text",
    "x" * 2_000,  # (a value over 512 KiB is in the corpus: generating it thousands of times costs minutes)
    "1e400",
    "-.inf",
    ".nan",
    "0x7fffffffffffffffffff",
    "2026-11-30",
    "~",
    "null",
    "yes",
    "---\nversion: 1",
    "...",
    "%YAML 1.1",
    "\t tab",
    "a/../b",
    "consul-manifest/owners/x",
    "/abs",
    "a//b",
]
SLOTS = [
    "owner: {f}",
    "services:\n  - name: {f}\n    port: 80",
    "services:\n  - name: api\n    port: {f}",
    "services:\n  - name: api\n    tags: [{f}]",
    "services:\n  - name: api\n    meta: {{k: {f}}}",
    "services:\n  - name: api\n    checks:\n      - ttl: {f}",
    "kv:\n  prefix: {f}\n  seed: {{a: 1}}",
    "kv:\n  seed:\n    {f}: 1",
    "kv:\n  enforce:\n    k: {f}",
    "dependencies:\n  DB: {{service: {f}}}",
    "dependencies:\n  DB: {{kv: {f}}}",
    "dependencies:\n  DB: {{service: db, format: {f}}}",
    "defaults:\n  address: {f}",
    "{f}: 1",
    "outputs:\n  env_file: {f}",
]


def load(data: bytes) -> bool:
    """True when valid; a refusal must locate every problem; anything else raised fails the test."""
    try:
        parse_manifest(data, Path("h.yaml"), ENV)
    except ManifestError as err:
        assert err.problems  # noqa: PT017 - the refusal itself is the subject
        for problem in err.problems:
            assert problem.file == "h.yaml" and problem.line >= 1 and problem.col >= 1 and problem.message
        return False
    return True


documents = st.builds(
    lambda slots, fragments: (
        "version: 1\n" + "\n".join(s.format(f=f) for s, f in zip(slots, fragments, strict=False))
    ).encode("utf-8", "surrogatepass"),
    st.lists(st.sampled_from(SLOTS), min_size=1, max_size=3, unique=True),
    st.lists(st.sampled_from(FRAGMENTS), min_size=3, max_size=3),
)
mutations = st.builds(
    lambda cut, insert, at: (VALID[: at % len(VALID)] + insert + VALID[at % len(VALID) + cut :]).encode(
        "utf-8", "surrogatepass"
    ),
    st.integers(0, 40),
    st.sampled_from(FRAGMENTS) | st.text(max_size=12),
    st.integers(0, 100_000),
)
raw_bytes = st.binary(max_size=300).map(lambda b: b"version: 1\n" + b)


@settings(max_examples=examples(6500), deadline=None, suppress_health_check=list(HealthCheck))
@given(documents)
def test_generated_hostile_documents(data: bytes) -> None:
    load(data)


@settings(max_examples=examples(2500), deadline=None, suppress_health_check=list(HealthCheck))
@given(mutations)
def test_hostile_mutations_of_a_valid_manifest(data: bytes) -> None:
    load(data)


@settings(max_examples=examples(1500), deadline=None, suppress_health_check=list(HealthCheck))
@given(raw_bytes)
def test_hostile_bytes(data: bytes) -> None:
    load(data)


class Recorder:
    """Stands where Consul would be, and records every request (there should be none)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._record()

            def do_PUT(self) -> None:
                self._record()

            def _record(self) -> None:
                outer.requests.append(f"{self.command} {self.path}")
                self.send_response(500)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    running = Recorder()
    yield running
    running.server.shutdown()


@settings(max_examples=examples(300), deadline=None, suppress_health_check=list(HealthCheck))
@given(documents | mutations)
def test_an_invalid_manifest_sends_nothing_and_exits_3(
    recorder: Recorder, tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    if load(data):
        return  # valid: not this test's business
    folder = tmp_path_factory.mktemp("hostile")
    path = folder / "h.yaml"
    path.write_bytes(data)
    before = len(recorder.requests)
    for command in (["apply", str(path)], ["destroy", "--yes", str(path)], ["render", str(path)]):
        count("hostile manifest through the command line")
        result = CliRunner().invoke(cli, command, env={"CONSUL_HTTP_ADDR": recorder.address, **ENV})
        assert result.exit_code == 3, result.output
        assert "Traceback" not in result.output
    assert len(recorder.requests) == before, recorder.requests[before:]
