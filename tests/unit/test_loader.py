"""The loader on valid input: interpolation, defaults, owners, folders, typed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from manifest_runner.errors import ManifestError
from manifest_runner.manifest.checks import HttpCheck, TtlCheck
from manifest_runner.manifest.loader import load_manifests, parse_manifest
from manifest_runner.manifest.model import KVDependency, ServiceDependency, effective_service_id

EXAMPLES = Path(__file__).parent.parent.parent / "examples"


def parse(text: str, env: dict[str, str] | None = None, name: str = "m.yaml"):
    return parse_manifest(text.encode(), Path(name), env or {})


def test_interpolation_with_defaults_and_escapes() -> None:
    loaded = parse(
        "version: 1\ndefaults:\n  address: ${POD_IP:-127.0.0.1}\nservices:\n"
        "  - name: api\n    id: api-${HOST}\n    port: ${PORT:-8080}\n    meta: {cmd: 'echo $${HOME} $$ $x'}\n",
        {"HOST": "web-1", "PORT": ""},
    )
    service = loaded.manifest.services[0]
    assert loaded.manifest.defaults.address == "127.0.0.1"
    assert service.id == "api-web-1"
    assert service.port == 8080  # an empty variable takes the default; the text is coerced to the port's type
    assert service.meta == {"cmd": "echo ${HOME} $$ $x"}


def test_owner_defaults_to_the_file_stem() -> None:
    assert parse("version: 1\n", name="billing-api.yaml").owner == "billing-api"
    assert parse("version: 1\nowner: team\n", name="x.yaml").owner == "team"


def test_an_owner_from_an_unusable_file_name_is_refused() -> None:
    with pytest.raises(ManifestError, match="not a valid owner"):
        parse("version: 1\n", name="my manifest.yaml")


def test_default_service_id_uses_name_address_and_port() -> None:
    loaded = parse("version: 1\ndefaults: {address: 10.0.0.5}\nservices:\n  - {name: api, port: 80}\n  - {name: w}\n")
    defaults = loaded.manifest.defaults
    assert [effective_service_id(s, defaults) for s in loaded.manifest.services] == ["api-10.0.0.5-80", "w-10.0.0.5"]


def test_checks_and_dependencies_take_their_kind_from_their_keys() -> None:
    loaded = parse(
        "version: 1\nservices:\n  - name: api\n    port: 80\n    checks:\n"
        "      - {http: 'http://127.0.0.1/h'}\n      - {ttl: 30s, heartbeat: {command: [x], every: 10s}}\n"
        "dependencies:\n  A: {service: db}\n  B: {kv: a/b}\n"
    )
    checks = loaded.manifest.services[0].checks
    assert isinstance(checks[0], HttpCheck)
    assert checks[0].interval == "10s"
    assert isinstance(checks[1], TtlCheck)
    assert checks[1].heartbeat is not None
    deps = loaded.manifest.dependencies
    assert isinstance(deps["A"], ServiceDependency)
    assert deps["A"].strategy == "health_weighted"
    assert isinstance(deps["B"], KVDependency)


def test_kv_values_keep_their_yaml_type() -> None:
    loaded = parse(
        "version: 1\nkv:\n  seed:\n    i: 20\n    f: 1.5\n    b: true\n    s: '20'\n    e: ''\n"
        "    l: [1, a]\n    m: {x: [true]}\n    yes_is_text: yes\n"
    )
    assert loaded.manifest.kv.seed == {
        "i": 20,
        "f": 1.5,
        "b": True,
        "s": "20",
        "e": "",
        "l": [1, "a"],
        "m": {"x": [True]},
        "yes_is_text": "yes",
    }
    assert type(loaded.manifest.kv.seed["i"]) is int
    assert type(loaded.manifest.kv.seed["b"]) is bool


def test_anchors_and_merge_keys_work() -> None:
    loaded = parse(
        "version: 1\nservices:\n  - name: api\n    port: 80\n    checks:\n"
        "      - &c {tcp: '127.0.0.1:80', interval: 5s}\n"
        "  - name: api2\n    port: 81\n    checks:\n      - *c\n"
    )
    assert loaded.manifest.services[1].checks == loaded.manifest.services[0].checks


def test_a_folder_loads_every_yaml_and_yml_file_in_order(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text("version: 1\nservices: [{name: b, port: 2}]\n")
    (tmp_path / "a.yaml").write_text("version: 1\nservices: [{name: a, port: 1}]\n")
    (tmp_path / "c.txt").write_text("ignored")
    loaded = load_manifests([tmp_path], {})
    assert [m.file.name for m in loaded.manifests] == ["a.yaml", "b.yml"]
    assert loaded.owners == ("a", "b")


def test_the_same_file_given_twice_is_loaded_once(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("version: 1\nservices: [{name: a, port: 1}]\n")
    assert len(load_manifests([tmp_path, tmp_path / "a.yaml"], {}).manifests) == 1


def test_a_byte_order_mark_is_accepted() -> None:
    assert parse_manifest(b"\xef\xbb\xbfversion: 1\n", Path("bom.yaml"), {}).manifest.version == 1


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_is_valid_and_points_editors_at_the_schema(example: Path) -> None:
    assert example.read_text().startswith("# yaml-language-server: $schema=../schemas/manifest.schema.json\n")
    loaded = load_manifests([example], {})
    assert loaded.manifests[0].manifest.version == 1


def test_the_examples_folder_is_valid_as_a_whole() -> None:
    assert len(load_manifests([EXAMPLES], {}).manifests) >= 2
