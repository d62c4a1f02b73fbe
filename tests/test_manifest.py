"""The Slack app manifest creates the app the bot expects: one command, interactivity, the Home tab, minimal scopes."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


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
    assert scopes == {"commands", "chat:write", "usergroups:read"}
    # every Web API method the bot calls is covered by those scopes (chat.* and usergroups.users.list)
    called: set[str] = set()
    for path in (ROOT / "bot").rglob("*.py"):
        if "sandbox" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith(
                ("chat_", "usergroups_", "users_", "conversations_", "views_")
            ):
                called.add(node.attr)
    allowed = {"chat_postMessage", "chat_update", "chat_getPermalink", "usergroups_users_list", "views_publish"}
    assert called <= allowed, called
