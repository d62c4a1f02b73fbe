"""The Slack stand-in refuses what Slack refuses: Block Kit rules the bot relies on, views and trigger_ids."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from sandbox.slack_api import FakeSlackApi, block_problems, view_problems


@pytest.fixture
def fake() -> Iterator[FakeSlackApi]:
    with FakeSlackApi() as api:
        yield api


@pytest.fixture
def client(fake: FakeSlackApi) -> WebClient:
    return WebClient(token=fake.token, base_url=fake.api_url)


def _button(action_id: str, text: str = "Done", **extra: Any) -> dict[str, Any]:
    return {"type": "button", "text": {"type": "plain_text", "text": text}, "action_id": action_id, **extra}


def _refused(client: WebClient, blocks: list[dict[str, Any]]) -> str:
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C1", text="t", blocks=blocks)
    return str(err.value.response["error"])


def test_two_buttons_with_one_action_id_in_a_block_are_refused(client: WebClient) -> None:
    twice = [{"type": "actions", "elements": [_button("step_done"), _button("step_done", "Done, and DNS")]}]
    assert _refused(client, twice) == "invalid_blocks"
    assert "duplicate action_id 'step_done' in one block" in " ".join(block_problems(twice))
    apart = [
        {"type": "actions", "block_id": "a", "elements": [_button("step_done")]},
        {"type": "actions", "block_id": "b", "elements": [_button("step_done")]},
    ]
    client.chat_postMessage(channel="C1", text="t", blocks=apart)  # unique within each block is enough


def test_duplicate_block_ids_and_limits_are_refused(client: WebClient) -> None:
    same_id = [{"type": "section", "block_id": "x", "text": {"type": "mrkdwn", "text": "a"}}] * 2
    assert _refused(client, same_id) == "invalid_blocks"
    cases: list[list[dict[str, Any]]] = [
        [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
        [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}],
        [{"type": "section", "text": {"type": "mrkdwn", "text": ""}}],
        [{"type": "actions", "elements": [_button(f"b{i}") for i in range(26)]}],
        [{"type": "actions", "elements": [_button("b", "x" * 76)]}],
        [{"type": "actions", "elements": [_button("b", confirm={"title": {"type": "plain_text", "text": "t"},
                                                                "text": {"type": "mrkdwn", "text": "x" * 301},
                                                                "confirm": {"type": "plain_text", "text": "ok"},
                                                                "deny": {"type": "plain_text", "text": "no"}})]}],
        [{"type": "actions", "elements": [{"type": "overflow", "action_id": "m",
                                           "options": [{"text": {"type": "plain_text", "text": "only"},
                                                        "value": "v"}]}]}],
        [{"type": "actions", "elements": [{"type": "overflow", "action_id": "m",
                                           "options": [{"text": {"type": "plain_text", "text": "a"},
                                                        "value": "v" * 151}] * 2}]}],
        [{"type": "input", "label": {"type": "plain_text", "text": "Reason"},
          "element": {"type": "plain_text_input", "action_id": "r"}}],
        [{"type": "section", "text": {"type": "mrkdwn", "text": "s"}}] * 51,
    ]  # fmt: skip
    for blocks in cases:
        assert _refused(client, blocks) == "invalid_blocks", blocks[0]


def _modal(**extra: Any) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": "modal_mark_done",
        "title": {"type": "plain_text", "text": "Mark F1 done"},
        "submit": {"type": "plain_text", "text": "Mark done"},
        "private_metadata": "{}",
        "blocks": [
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Why?"},
                "element": {"type": "plain_text_input", "action_id": "reason_input", "multiline": True},
            }
        ],
        **extra,
    }


def test_views_open_needs_a_fresh_unused_trigger(fake: FakeSlackApi, client: WebClient) -> None:
    now = [100.0]
    fake.clock = lambda: now[0]
    trigger = fake.issue_trigger("U0BOB")
    opened = client.views_open(trigger_id=trigger, view=_modal())
    assert fake.views("U0BOB")[0].id == opened["view"]["id"]
    with pytest.raises(SlackApiError) as err:
        client.views_open(trigger_id=trigger, view=_modal())
    assert err.value.response["error"] == "exchanged_trigger_id"  # single use
    late = fake.issue_trigger("U0BOB")
    now[0] += 3.01
    with pytest.raises(SlackApiError) as err:
        client.views_open(trigger_id=late, view=_modal())
    assert err.value.response["error"] == "expired_trigger_id"  # 3 s
    with pytest.raises(SlackApiError) as err:
        client.views_open(trigger_id="made-up", view=_modal())
    assert err.value.response["error"] == "invalid_trigger_id"


def test_views_are_validated_on_open_and_update(fake: FakeSlackApi, client: WebClient) -> None:
    assert view_problems(_modal()) == []
    bad = [
        _modal(title={"type": "plain_text", "text": "a title longer than 24 chars"}),
        _modal(submit=None),
        _modal(private_metadata="x" * 3001),
        {**_modal(), "blocks": [{"type": "section", "block_id": "s", "text": {"type": "mrkdwn", "text": "a"}}] * 2},
    ]
    for view in bad:
        view = {k: v for k, v in view.items() if v is not None}
        with pytest.raises(SlackApiError):
            client.views_open(trigger_id=fake.issue_trigger("U0BOB"), view=view)
    opened = client.views_open(trigger_id=fake.issue_trigger("U0BOB"), view=_modal())
    with pytest.raises(SlackApiError) as err:
        client.views_update(view_id=opened["view"]["id"], view=bad[0])
    assert err.value.response["error"] == "invalid_blocks"
    client.views_update(view_id=opened["view"]["id"], view=_modal(callback_id="modal_skip"))
    assert fake.views("U0BOB")[0].callback_id == "modal_skip"


def test_not_in_channel(fake: FakeSlackApi, client: WebClient) -> None:
    fake.not_member.add("C0ELSEWHERE")
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C0ELSEWHERE", text="hello")
    assert err.value.response["error"] == "not_in_channel"


def test_radio_and_checkbox_options_keep_slacks_75_character_limits() -> None:
    def radio(text: str, description: str | None = None) -> list[dict[str, Any]]:
        option: dict[str, Any] = {"text": {"type": "plain_text", "text": text}, "value": "v"}
        if description is not None:
            option["description"] = {"type": "plain_text", "text": description}
        element = {"type": "radio_buttons", "action_id": "a", "options": [option]}
        return [{"type": "input", "block_id": "b", "label": {"type": "plain_text", "text": "L"}, "element": element}]

    assert block_problems(radio("ok", "fine"), surface="modal") == []
    assert "option text longer than 75" in " ".join(block_problems(radio("x" * 76), surface="modal"))
    assert "option description longer than 75" in " ".join(block_problems(radio("ok", "y" * 76), surface="modal"))
