"""Insecure transports are refused for real (non-loopback) addresses unless a host's configuration allows them.

Finding 10 of the security issue: ``basic`` over ``http``, ``server_cert_validation: ignore``,
``message_encryption: never`` and a plain-http ``SLACK_API_URL`` are ConfigErrors for non-loopback
addresses; ``allow_insecure: true`` accepts them with a warning at every start of ``serve``; the
simulator on loopback keeps working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import load_config
from bot.errors import ConfigError
from bot.runtime import build_runtime
from bot.store.db import Store
from sandbox.rehearsal import BOT_TOKEN
from sandbox.slack_api import FakeSlackApi
from tests.support.paths import EXAMPLE_CONFIG
from tests.support.platform import free_port
from tests.support.serve_process import ServeProcess, _bot_env


def _write(tmp_path: Path, mutate: Any) -> Path:
    raw = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    mutate(raw)
    path = tmp_path / "failover.yml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _ms_b2(raw: dict[str, Any]) -> dict[str, Any]:
    return raw["sites"]["site-b"]["storage_servers"][1]["winrm"]  # type: ignore[no-any-return]


def test_the_example_on_loopback_loads_unchanged() -> None:
    config = load_config(EXAMPLE_CONFIG)  # basic over http, but every endpoint is 127.0.0.1
    assert config.insecure_allowed() == []


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"url": "http://10.1.2.3:5985/wsman"}, "basic over http"),
        ({"url": "http://as-b.corp.example:5985/wsman"}, "basic over http"),
        ({"url": "https://10.1.2.3:5986/wsman", "server_cert_validation": "ignore"}, "accepts any certificate"),
        (
            {"url": "http://10.1.2.3:5985/wsman", "transport": "ntlm", "message_encryption": "never"},
            "unencrypted",
        ),
    ],
)
def test_insecure_transports_to_real_addresses_are_refused(tmp_path: Path, settings: dict[str, Any], said: str) -> None:
    path = _write(tmp_path, lambda raw: _ms_b2(raw).update(settings))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "sites.site-b.storage_servers[1].winrm" in message and said in message
    assert "allow_insecure: true" in message and "\n" not in message


def test_a_default_that_is_insecure_is_refused_at_the_host_that_uses_it(tmp_path: Path) -> None:
    def mutate(raw: dict[str, Any]) -> None:
        raw["sites"]["site-a"]["account_server"]["winrm"] = "http://192.0.2.10:5985/wsman"  # winrm default: basic

    with pytest.raises(ConfigError, match=r"sites\.site-a\.account_server\.winrm: as-a .*basic over http"):
        load_config(_write(tmp_path, mutate))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.4.5", "localhost", "[::1]"])
def test_loopback_keeps_working(tmp_path: Path, host: str) -> None:
    settings = {"url": f"http://{host}:5985/wsman", "server_cert_validation": "ignore", "message_encryption": "never"}
    config = load_config(_write(tmp_path, lambda raw: _ms_b2(raw).update(settings)))
    assert config.host("ms-b2").winrm.transport_risks() == []


def test_secure_settings_to_real_addresses_load(tmp_path: Path) -> None:
    settings = {"url": "https://10.1.2.3:5986/wsman", "transport": "basic"}  # basic inside TLS, validated
    config = load_config(_write(tmp_path, lambda raw: _ms_b2(raw).update(settings)))
    assert config.host("ms-b2").winrm.transport_risks() == []


def test_allow_insecure_accepts_them_for_that_host_only(tmp_path: Path) -> None:
    def mutate(raw: dict[str, Any]) -> None:
        _ms_b2(raw).update({"url": "http://10.1.2.3:5985/wsman", "message_encryption": "never", "allow_insecure": True})

    config = load_config(_write(tmp_path, mutate))
    allowed = config.insecure_allowed()
    assert len(allowed) == 2 and all(a.startswith("ms-b2: ") for a in allowed)

    def also_as_b(raw: dict[str, Any]) -> None:
        mutate(raw)
        raw["sites"]["site-b"]["account_server"]["winrm"] = "http://10.1.2.4:5985/wsman"

    with pytest.raises(ConfigError, match="as-b"):
        load_config(_write(tmp_path, also_as_b))


def test_a_plain_http_slack_api_url_off_loopback_is_refused_unless_allowed(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'bot.db'}")
    try:
        config = load_config(EXAMPLE_CONFIG)
        with pytest.raises(ConfigError, match="SLACK_API_URL http://slack-proxy.corp.example/api/ is plain http"):
            build_runtime(
                config, store=store, token=BOT_TOKEN, signing_secret="s", api_url="http://slack-proxy.corp.example/api/"
            )
        allowed = load_config(_write(tmp_path, lambda raw: raw["slack"].update({"allow_insecure": True})))
        assert allowed.check_slack_api_url("http://slack-proxy.corp.example/api/")
        assert config.check_slack_api_url("https://slack.com/api/") == []
        assert config.check_slack_api_url("http://127.0.0.1:9/api/") == []
    finally:
        store.dispose()


def test_serve_warns_at_every_start_about_what_is_allowed(tmp_path: Path) -> None:
    def mutate(raw: dict[str, Any]) -> None:
        _ms_b2(raw).update({"url": "http://10.1.2.3:5985/wsman", "allow_insecure": True})

    config_path = _write(tmp_path, mutate)
    config = load_config(config_path)
    with FakeSlackApi(token=BOT_TOKEN) as slack:
        odbc = {name: "Driver={none}" for name in config.odbc_envs()}
        env = _bot_env(config_path, slack, f"sqlite:///{tmp_path / 'bot.db'}", odbc)
        bot = ServeProcess("bot", config_path, free_port(), env, tmp_path / "logs")
        try:
            for _ in range(2):
                bot.start()
                bot.kill()
        finally:
            bot.kill()
    log = bot.log_path.read_text(encoding="utf-8")
    warning = "insecure transport allowed by the configuration: ms-b2: transport basic over http"
    assert log.count(warning) == 2
