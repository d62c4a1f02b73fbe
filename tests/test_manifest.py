"""The Slack app manifest creates the app the bot expects: one command, interactivity, the Home tab, minimal scopes."""

from __future__ import annotations

import ast

import yaml

from tests.support.paths import ROOT


def test_manifest_matches_what_the_bot_uses() -> None:
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    commands = manifest["features"]["slash_commands"]
    assert [c["command"] for c in commands] == ["/failover"]
    assert commands[0]["url"].endswith("/slack/events")
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["interactivity"]["request_url"].endswith("/slack/events")
    # the Home tab: enabled, published on app_home_opened, at the same endpoint (events need no extra scope)
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert manifest["settings"]["event_subscriptions"]["bot_events"] == ["app_home_opened"]
    assert manifest["settings"]["event_subscriptions"]["request_url"].endswith("/slack/events")
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert scopes == {"commands", "chat:write", "usergroups:read", "users:read", "files:write"}
    # every Web API method the bot calls is covered by those scopes (chat.*, usergroups.users.list, users.info
    # for people's names in the report, files.* to attach the report and its picture)
    called: set[str] = set()
    for path in (ROOT / "bot").rglob("*.py"):
        if "sandbox" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith(
                ("chat_", "usergroups_", "users_", "conversations_", "views_", "files_")
            ):
                called.add(node.attr)
    allowed = {"chat_postMessage", "chat_update", "chat_getPermalink", "usergroups_users_list", "views_publish"}
    allowed |= {"users_info", "files_upload_v2"}  # the report: people's names, its file and picture
    allowed |= {"chat_postEphemeral", "views_open"}  # a submitted modal's answer (chat:write); views.open: no scope
    assert called <= allowed, called


def test_usage_hint_names_every_subcommand_and_fits() -> None:
    from bot.runs import policy

    hint = yaml.safe_load((ROOT / "manifest.yml").read_text())["features"]["slash_commands"][0]["usage_hint"]
    # Slack shows the hint on one line of the command's autocomplete; we hold it to 100 characters
    assert len(hint) <= 100, len(hint)
    words = {w.strip("[]<>") for w in hint.replace("|", " ").split()}
    assert policy.READ_ONLY_COMMANDS | policy.OPERATOR_COMMANDS <= words


def test_socket_mode_manifest_is_the_same_app_without_urls() -> None:
    http = yaml.safe_load((ROOT / "manifest.yml").read_text())
    socket = yaml.safe_load((ROOT / "manifest.socket.yml").read_text())
    assert socket["settings"]["socket_mode_enabled"] is True and http["settings"]["socket_mode_enabled"] is False
    assert "url" not in socket["features"]["slash_commands"][0]
    assert "request_url" not in socket["settings"]["interactivity"]
    assert "request_url" not in socket["settings"]["event_subscriptions"]
    assert socket["settings"]["interactivity"]["is_enabled"] is True
    # everything else is identical: no drift between the two ways of creating the app
    del http["features"]["slash_commands"][0]["url"], http["settings"]["interactivity"]["request_url"]
    del http["settings"]["event_subscriptions"]["request_url"]  # events arrive over the socket
    http["settings"]["socket_mode_enabled"] = True
    assert socket == http
