"""Connection settings follow Consul's environment contract, flag > environment > default; tokens never print."""

from __future__ import annotations

from pathlib import Path

import pytest

from manifest_runner.config import ConsulConfig, Endpoint
from manifest_runner.errors import SettingsError

CANARY = "canary-token-5d41402abc4b2a76"


def settings(flags: dict[str, object] | None = None, **env: str) -> ConsulConfig:
    return ConsulConfig.from_sources(flags, env)


@pytest.mark.parametrize(
    ("addr", "ssl", "endpoint"),
    [
        ("127.0.0.1:8500", None, Endpoint("http", "127.0.0.1", 8500)),
        ("http://consul.local:8501", None, Endpoint("http", "consul.local", 8501)),
        ("https://consul.local", None, Endpoint("https", "consul.local", 443)),
        ("consul.local:8501", "true", Endpoint("https", "consul.local", 8501)),
        ("http://consul.local:8501", "true", Endpoint("https", "consul.local", 8501)),
        ("https://consul.local:8501", "false", Endpoint("https", "consul.local", 8501)),
        ("unix:///var/run/consul.sock", None, Endpoint("unix", socket_path="/var/run/consul.sock")),
        ("[::1]:8500", None, Endpoint("http", "::1", 8500)),
    ],
)
def test_addresses_like_consuls_own_client(addr: str, ssl: str | None, endpoint: Endpoint) -> None:
    env = {"CONSUL_HTTP_ADDR": addr, **({"CONSUL_HTTP_SSL": ssl} if ssl else {})}
    assert settings(**env).endpoint() == endpoint


@pytest.mark.parametrize("addr", ["ftp://x:1", "unix://", "host:notaport", "http://h:1/path"])
def test_bad_addresses_are_settings_errors(addr: str) -> None:
    with pytest.raises(SettingsError, match="CONSUL_HTTP_ADDR"):
        settings(CONSUL_HTTP_ADDR=addr).endpoint()


def test_default_address() -> None:
    assert settings().endpoint().url == "http://127.0.0.1:8500"


def test_flags_beat_the_environment() -> None:
    s = settings({"http_addr": "10.0.0.1:1", "datacenter": None}, CONSUL_HTTP_ADDR="10.0.0.2:2", CONSUL_DATACENTER="x")
    assert s.http_addr == "10.0.0.1:1"
    assert s.datacenter == "x"


def test_token_file_wins_over_token_at_the_same_level(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"  {CANARY}-file\n")
    s = settings(CONSUL_HTTP_TOKEN=CANARY, CONSUL_HTTP_TOKEN_FILE=str(token_file))
    assert s.resolved_token() == f"{CANARY}-file"


def test_a_token_flag_beats_a_token_file_in_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file")
    s = settings({"token": "from-flag"}, CONSUL_HTTP_TOKEN_FILE=str(token_file))
    assert s.resolved_token() == "from-flag"


def test_an_unreadable_token_file_is_a_settings_error_without_the_token(tmp_path: Path) -> None:
    s = settings(CONSUL_HTTP_TOKEN=CANARY, CONSUL_HTTP_TOKEN_FILE=str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="cannot read the token file") as info:
        s.resolved_token()
    assert CANARY not in str(info.value)


def test_tokens_never_print() -> None:
    s = settings(CONSUL_HTTP_TOKEN=CANARY)
    for text in (str(s), repr(s), s.model_dump_json(), str(s.model_dump())):
        assert CANARY not in text
    assert s.resolved_token() == CANARY


def test_tls_settings(tmp_path: Path) -> None:
    for name in ("ca.pem", "c.pem", "k.pem"):
        (tmp_path / name).write_text("pem")
    ca, cert, key = (str(tmp_path / n) for n in ("ca.pem", "c.pem", "k.pem"))
    s = settings(CONSUL_CACERT=ca, CONSUL_CLIENT_CERT=cert, CONSUL_CLIENT_KEY=key, CONSUL_HTTP_SSL_VERIFY="0")
    assert s.verify() is False
    assert s.client_certificate() == (cert, key)
    assert settings(CONSUL_CACERT=ca).verify() == ca
    assert settings(CONSUL_CAPATH=str(tmp_path)).verify() == str(tmp_path)


def test_missing_tls_files_are_settings_errors_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="CONSUL_CACERT"):
        settings(CONSUL_CACERT=str(tmp_path / "missing.pem")).verify()
    with pytest.raises(SettingsError, match="CONSUL_CAPATH"):
        settings(CONSUL_CAPATH=str(tmp_path / "missing")).verify()
    with pytest.raises(SettingsError, match="CONSUL_CLIENT_KEY"):
        settings(CONSUL_CLIENT_CERT=__file__, CONSUL_CLIENT_KEY=str(tmp_path / "k.pem")).client_certificate()


@pytest.mark.parametrize(
    ("written", "sent"),
    [("tok-en\n", "tok-en"), ("  tok-en\r\n", "tok-en"), ("\ttok-en ", "tok-en"), ("\n", None)],
)
def test_tokens_are_trimmed_like_consuls_own_cli(tmp_path: Path, written: str, sent: str | None) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(written)
    assert settings(CONSUL_HTTP_TOKEN_FILE=str(token_file)).resolved_token() == sent
    assert settings(CONSUL_HTTP_TOKEN=written).resolved_token() == sent


@pytest.mark.parametrize("bad", [CANARY + "\nX-Evil: 1", CANARY + "\u00e9", "a b" + CANARY, CANARY + "\x00"])
def test_a_token_that_cannot_be_a_header_is_refused_without_printing_it(tmp_path: Path, bad: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(bad)
    for config, source in (
        (settings(CONSUL_HTTP_TOKEN_FILE=str(token_file)), str(token_file)),
        (settings(CONSUL_HTTP_TOKEN=bad), "CONSUL_HTTP_TOKEN"),
    ):
        with pytest.raises(SettingsError) as caught:
            config.resolved_token()
        assert source in str(caught.value)
        assert CANARY not in str(caught.value)


def test_invalid_values_are_settings_errors_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="CONSUL_MANIFEST_TIMEOUT"):
        settings(CONSUL_MANIFEST_TIMEOUT="-1")
    with pytest.raises(SettingsError, match="CONSUL_HTTP_SSL_VERIFY"):
        settings(CONSUL_HTTP_SSL_VERIFY="maybe")


def test_consul_settings_reads_the_same_contract_the_pydantic_settings_way(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from manifest_runner import ConsulSettings

    env = {
        "CONSUL_HTTP_ADDR": "https://consul.local:8501",
        "CONSUL_HTTP_TOKEN": CANARY,
        "CONSUL_DATACENTER": "dc7",
        "CONSUL_MANIFEST_TIMEOUT": "2.5",
        "CONSUL_HTTP_SSL_VERIFY": "false",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = ConsulSettings()
    assert settings.model_dump() == ConsulConfig.from_sources(None, env).model_dump()
    assert settings.endpoint() == Endpoint("https", "consul.local", 8501)
    assert settings.resolved_token() == CANARY
    assert CANARY not in repr(settings)
    assert ConsulSettings(http_addr="10.0.0.1:1").http_addr == "10.0.0.1:1"  # arguments beat the environment
    dotenv = tmp_path / ".env"
    dotenv.write_text("CONSUL_DATACENTER=dc9\n")
    monkeypatch.delenv("CONSUL_DATACENTER")
    assert ConsulSettings(_env_file=dotenv).datacenter == "dc9"  # type: ignore[call-arg]


def test_the_command_line_does_not_import_pydantic_settings() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from click.testing import CliRunner; from manifest_runner.cli import cli; "
        "r = CliRunner().invoke(cli, ['plan', '--http-addr', '127.0.0.1:1', 'examples/quickstart.yaml']); "
        "print(r.exit_code, 'pydantic_settings' in sys.modules)"
    )
    root = Path(__file__).parent.parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    assert out.stdout.split() == ["4", "False"]
