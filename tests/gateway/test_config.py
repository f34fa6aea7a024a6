from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import ConfigError, decode_config, load_config
from gateway.defaults import default_config

GOOD = """
server: {port: 4100, max_body_bytes: 1000}
providers:
  - {name: vllm, kind: openai, base_urls: ["http://a:8000/v1", "http://b:8000/v1"], balance: vllm_queue}
  - {name: oa, kind: openai, base_url: "https://api.openai.com/v1", api_key: "${KEY}"}
  - {name: claude, kind: litellm}
routes:
  - name: chat
    targets: [{provider: vllm, model: llama, weight: 3}, {provider: oa, model: gpt-4o-mini}]
    fallbacks: [{provider: claude, model: anthropic/claude-3-5-haiku}]
    retries: 2
    timeouts: {connect_s: 1, first_byte_s: 10, total_s: 60}
"""


def test_valid_file_with_env_interpolation(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(GOOD)
    cfg = load_config(f, env={"KEY": "sk-1"})
    assert cfg.providers[1].api_key == "sk-1"
    assert cfg.providers[0].urls() == ["http://a:8000/v1", "http://b:8000/v1"]
    assert cfg.routes[0].fallbacks[0].model == "anthropic/claude-3-5-haiku"


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        ({"routes": [{"name": "a", "targets": [], "timeuot_s": 1}]}, "unknown field `timeuot_s` - at `$.routes[0]`"),
        ({"providers": [{"name": "p", "kind": "grpc", "base_url": "http://x"}]}, "$.providers[0].kind"),
        ({"providers": [{"name": "p", "kind": "openai"}]}, "$.providers[0]: kind 'openai' needs base_url"),
        ({"providers": [{"name": "p", "kind": "openai", "base_url": "ftp://x"}]}, "not an http(s) URL"),
        ({"providers": [{"name": "p", "kind": "openai", "base_url": "http://x", "api_key": "${NOPE}"}]},
         "$.providers[0].api_key: environment variable NOPE is not set"),
        ({"routes": [{"name": "a", "targets": [{"provider": "ghost", "model": "m"}]}]},
         "$.routes[0].targets[0].provider: unknown provider 'ghost'"),
        ({"server": {"port": "eighty"}}, "Expected `int`, got `str` - at `$.server.port`"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_invalid_configs_name_the_key(tree: object, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        decode_config(tree, env={})
    assert expected in str(err.value)


def test_env_default_syntax() -> None:
    tree = {"providers": [{"name": "p", "kind": "openai", "base_url": "${URL:-http://localhost:11434/v1}"}]}
    assert decode_config(tree, env={}).providers[0].base_url == "http://localhost:11434/v1"


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad, broken = tmp_path / "good.yaml", tmp_path / "bad.yaml", tmp_path / "broken.yaml"
    good.write_text(GOOD.replace("${KEY}", "literal"))
    bad.write_text("routes: [{name: a, targets: [{provider: nope, model: m}]}]")
    broken.write_text("routes: [unclosed")
    assert main(["check-config", str(good)]) == 0
    assert main(["check-config", str(bad)]) == 1
    assert "unknown provider 'nope'" in capsys.readouterr().err
    assert main(["check-config", str(broken)]) == 1
    assert main(["check-config", str(tmp_path / "missing.yaml")]) == 1


def test_default_config_adds_openai_only_with_a_key() -> None:
    assert [r.name for r in default_config(env={}).routes] == ["demo"]
    cfg = default_config(env={"OPENAI_API_KEY": "sk-x"})
    assert [r.name for r in cfg.routes] == ["demo", "openai"]
    assert cfg.providers[1].api_key == "sk-x"


SECRET = "sk-very-secret-value"


@pytest.mark.parametrize(
    ("provider", "where"),
    [
        # Credentials in a URL would reach /readyz, metric labels and logs; refused, naming the key only.
        ({"base_url": f"http://user:{SECRET}@host/v1"}, "$.providers[0].base_url: must not contain credentials"),
        ({"base_urls": ["http://a/v1", f"https://{SECRET}@b/v1"]}, "$.providers[0].base_urls[1]: must not contain"),
        ({"base_url": "http://ok/v1", "base_urls": [f"http://u:{SECRET}@b/v1"]}, "$.providers[0].base_urls[0]"),
        ({"base_url": f"http://u:{SECRET}@host/v1", "api_key": "k"}, "must not contain credentials"),
        # A value that is not a URL (a key pasted into the wrong field) is not repeated either.
        ({"base_url": SECRET}, "$.providers[0].base_url: not an http(s) URL"),
        ({"base_url": f"http://host:{SECRET}/v1"}, "$.providers[0].base_url: not a valid http(s) URL"),
        ({"base_url": f"http://host/v1\r\nX: {SECRET}"}, "must not contain whitespace or control"),
        # CR/LF in a header value made every request fail with ValueError and trip the breaker.
        ({"base_url": "http://h/v1", "api_key": f"{SECRET}\n"}, "$.providers[0].api_key: must not contain control"),
        ({"base_url": "http://h/v1", "headers": {"x-org": f"a\r\nb: {SECRET}"}},
         "$.providers[0].headers.x-org: must not contain control"),
        ({"base_url": "http://h/v1", "headers": {f"bad name {SECRET}": "v"}},
         "$.providers[0].headers: a header name is not a valid HTTP field name"),
    ],
)
def test_unsafe_provider_values_are_refused_without_echoing_them(provider: dict[str, object], where: str) -> None:
    tree = {"providers": [{"name": "p", "kind": "openai", **provider}]}
    with pytest.raises(ConfigError) as err:
        decode_config(tree, env={})
    assert where in str(err.value)
    assert SECRET not in str(err.value)


def test_yaml_syntax_error_names_the_position_not_the_line(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(f"providers:\n  - {{name: p, api_key: {SECRET}: [\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert "not valid YAML at line 2" in str(err.value)
    assert SECRET not in str(err.value)


def test_direct_provider_names_are_off_unless_opted_in() -> None:
    assert decode_config({}, env={}).server.allow_direct is False
    assert decode_config({"server": {"allow_direct": True}}, env={}).server.allow_direct is True
