"""Fuzzing every input boundary (Hypothesis): what Slack, a configuration file, a Settings.xml or a host sends.

The invariants: a signed request is acknowledged or refused (never HTTP 500), every command gets an
answer and none is "something went wrong"; nothing changes for a person without the role; a bad
configuration is one line naming the file and exit 2, never a traceback; the Settings.xml editor
changes no byte outside the element and refuses malformed files with its own error; host output
parses into a result or an ExecutionError. Budgets: the "ci" profile in tests/conftest.py.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from actions import remote, settings_xml
from actions.winrm import WinRMExecutor, clixml_to_text
from bot.config import load_config
from bot.errors import ConfigError, ExecutionError
from bot.slack_ids import ActionId
from sandbox.people import SlackPerson
from sandbox.rehearsal import SIGNING_SECRET, Rehearsal, rehearsal
from tests.support.paths import EXAMPLE_CONFIG, ROOT
from tests.support.platform import write_config

MALLORY = "U0MALLORY"  # in the channel, but neither operator nor approver
ALICE = "U0ALICE"  # an operator and approver (used only outside the incident channel)
WENT_WRONG = "Something went wrong on the bot's side"
SLOW = settings(max_examples=60)  # each example is an HTTP round trip through bolt


@pytest.fixture(scope="module")
def rh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rehearsal]:
    base = tmp_path_factory.mktemp("fuzz")
    with rehearsal(write_config(base / "cfg"), base / "state") as r:
        r.people[MALLORY] = SlackPerson(
            MALLORY, "mallory", bot_url=r.http.url, signing_secret=SIGNING_SECRET, slack=r.slack
        )
        yield r
        # Everything the fuzzers sent was answered by people-facing text, never by the unknown-error reply,
        # and nothing was opened: nobody fuzzing had the role to start a run.
        assert WENT_WRONG not in r.slack.all_text()
        assert r.service.last_run() is None


def _signed_post(url: str, body: bytes, content_type: str) -> tuple[int, str]:
    ts = str(int(time.time()))
    mac = hmac.new(SIGNING_SECRET.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": "v0=" + mac}
    request = urllib.request.Request(f"{url}/slack/events", data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=20) as reply:
            return reply.status, reply.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def _answers(rh: Rehearsal, user: str) -> int:
    return len(rh.slack.ephemerals(user))


# ---------------------------------------------------------------------------- Slack: slash-command text

_WORDS = st.sampled_from(
    [
        "start",
        "failback",
        "status",
        "plan",
        "abort",
        "report",
        "help",
        "START",
        "site-a",
        "site-b",
        "site-c",
        "scope=account",
        "scope=storage",
        "scope=",
        "scope=all=all",
        "storage=ss-a1",
        "storage=,",
        "storage=ss-a1,x",
        "rebuilt",
        "<!channel>",
        "<https://evil.example|ok>",
        "'",
        '"',
        "\\",
        "`",
        "&amp;",
        "*bold*",
        "\x00",
        "\u202e",
        "R-1|F1|0|",
        "--live",
        "-h",
        "F1",
        "💥",
        "a" * 300,
    ]
)
COMMAND_TEXT = st.one_of(
    st.text(max_size=200), st.lists(st.one_of(_WORDS, st.text(max_size=15)), max_size=7).map(" ".join)
)


def _first_word(text: str) -> str:
    try:
        words = shlex.split(text)
    except ValueError:
        return ""
    return words[0].lower() if words else ""


@SLOW
@given(text=COMMAND_TEXT, who=st.sampled_from([(MALLORY, "C0INCIDENT"), (ALICE, "C0ELSEWHERE"), (MALLORY, "")]))
def test_fuzz_slash_command_text(rh: Rehearsal, text: str, who: tuple[str, str]) -> None:
    assume(_first_word(text) not in ("check", "readiness"))  # reach hosts: their own tests; too slow here
    user, channel = who
    before = _answers(rh, user)
    response = rh.person(user).command(text, channel=channel)
    assert response.status == 200
    rh.wait_until("an answer", lambda: _answers(rh, user) > before, timeout=20)
    assert WENT_WRONG not in rh.slack.ephemerals(user)[-1].text


# ---------------------------------------------------------------------------- Slack: interaction payloads

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_BUTTON_VALUE = st.one_of(
    st.text(max_size=40),
    st.tuples(
        st.sampled_from(["", "R-1", "R-does-not-exist", "x" * 60]),
        st.sampled_from(["", "F1", "B11", "Z9"]),
        st.sampled_from(["0", "1", "-1", "x", "99999999999999999999"]),
        st.text(max_size=8),
    ).map("|".join),
)
_ACTION = st.fixed_dictionaries(
    {"action_id": st.one_of(st.sampled_from([str(a) for a in ActionId]), st.text(max_size=20))},
    optional={
        "value": _BUTTON_VALUE,
        "block_id": st.text(max_size=10),
        "action_ts": st.text(max_size=12),
        "type": st.sampled_from(["button", "overflow", "plain_text_input"]),
    },
)
_STATE_BLOCK = st.dictionaries(st.text(max_size=5), _JSON, max_size=2)
_BLOCK_ACTIONS = st.fixed_dictionaries(
    {
        "type": st.just("block_actions"),
        "user": st.fixed_dictionaries({"id": st.sampled_from([MALLORY, "", "U0NOBODY"])}, optional={"name": st.text()}),
        "actions": st.lists(_ACTION, min_size=1, max_size=2),
        "response_url": st.just("http://127.0.0.1:9/response_url/none"),
    },
    optional={
        "team": st.fixed_dictionaries({"id": st.text(max_size=10)}),
        "channel": st.fixed_dictionaries({"id": st.sampled_from(["C0INCIDENT", "C0X", ""])}),
        "container": _JSON,
        "state": st.fixed_dictionaries(
            {
                "values": st.dictionaries(
                    st.text(max_size=5), st.dictionaries(st.text(max_size=5), _JSON, max_size=2), max_size=2
                )
            }
        ),
        "trigger_id": st.text(max_size=20),
        "api_app_id": st.text(max_size=10),
    },
)
_OTHER_PAYLOADS = st.dictionaries(
    st.sampled_from(["type", "user", "actions", "view", "callback_id", "team", "token"]), _JSON, max_size=5
) | st.fixed_dictionaries({"type": st.sampled_from(["view_submission", "shortcut", "message_action", "x"])})


@SLOW
@given(payload=_BLOCK_ACTIONS | _OTHER_PAYLOADS)
def test_fuzz_interaction_payloads(rh: Rehearsal, payload: dict[str, Any]) -> None:
    if payload.get("type") == "block_actions":  # answers go to the stand-in, so they can be read
        payload["response_url"] = rh.slack.response_url(MALLORY)
    response = rh.person(MALLORY).click_raw(payload)
    assert response.status in (200, 400, 404), response  # acknowledged, malformed, or unhandled: never 500


# ---------------------------------------------------------------------------- Slack: event bodies

_EVENT_KEYS = st.sampled_from(["type", "user", "text", "channel"])
_EVENT_BODIES = st.one_of(
    _JSON.map(json.dumps),
    st.fixed_dictionaries(
        {
            "type": st.just("event_callback"),
            "event": st.dictionaries(st.sampled_from(["type", "user", "text", "channel"]), _JSON),
        },
        optional={
            "team_id": st.text(max_size=10),
            "api_app_id": st.text(max_size=10),
            "event_id": st.text(max_size=10),
        },
    ).map(json.dumps),
    st.builds(lambda c: json.dumps({"type": "url_verification", "challenge": c}), st.text(max_size=40)),
    st.text(max_size=100),
)


@SLOW
@given(body=_EVENT_BODIES)
def test_fuzz_event_bodies(rh: Rehearsal, body: str) -> None:
    status, answer = _signed_post(rh.http.url, body.encode("utf-8"), "application/json")
    assert status in (200, 400, 404), (status, answer)
    parsed = _maybe_json(body)
    if (
        isinstance(parsed, dict)
        and parsed.get("type") == "url_verification"
        and isinstance(parsed.get("challenge"), str)
    ):
        assert status == 200 and _maybe_json(answer) == {"challenge": parsed["challenge"]}, answer
    if not isinstance(parsed, dict):
        assert status == 400


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


# ---------------------------------------------------------------------------- configuration files

EXAMPLE_RAW = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
_TRICKY = ["http://[::1/wsman", "https://h:99999/wsman", "ftp://x", "http://10.0.0.1:5985/wsman", "", "site-a", "as-a"]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(_TRICKY),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _paths(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*at, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*at, i))


def _mutate(raw: Any, data: st.DataObject) -> Any:
    path = data.draw(st.sampled_from(list(_paths(raw))))
    if not path:
        return data.draw(_VALUES)
    parent = raw
    for part in path[:-1]:
        parent = parent[part]
    key = path[-1]
    how = data.draw(st.sampled_from(["replace", "delete", "rename", "duplicate"]))
    if how == "replace":
        parent[key] = data.draw(_VALUES)
    elif how == "delete":
        del parent[key]
    elif how == "rename" and isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=12))] = parent.pop(key)
    elif how == "duplicate" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))
    return raw


def _text_mutation(text: str, data: st.DataObject) -> str:
    lines = text.splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    how = data.draw(st.sampled_from(["drop", "indent", "garble"]))
    if how == "drop":
        del lines[i]
    elif how == "indent":
        lines[i] = " " * data.draw(st.integers(1, 3)) + lines[i]
    else:
        at = data.draw(st.integers(0, len(lines[i])))
        lines[i] = lines[i][:at] + data.draw(st.text(max_size=4)) + lines[i][at:]
    return "\n".join(lines)


@settings(max_examples=300)
@given(data=st.data())
def test_fuzz_configuration_files(tmp_path: Path, data: st.DataObject) -> None:
    raw = copy.deepcopy(EXAMPLE_RAW)
    for _ in range(data.draw(st.integers(1, 3))):
        raw = _mutate(raw, data)
    text = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
    if data.draw(st.booleans()):
        text = _text_mutation(text, data)
    path = tmp_path / "failover.yml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and "\n" not in message and "\r" not in message, message


@pytest.mark.parametrize("url", ["http://[::1/wsman", "https://h:99999/wsman", "http://[zz]:1/wsman", "\n"])
def test_malformed_winrm_urls_found_by_the_fuzzer_are_one_line_config_errors(tmp_path: Path, url: str) -> None:
    raw = copy.deepcopy(EXAMPLE_RAW)
    raw["sites"]["site-a"]["account_server"]["winrm"] = url
    path = tmp_path / "failover.yml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"sites\.site-a\.account_server\.winrm") as caught:
        load_config(path)
    assert "\n" not in str(caught.value)


@settings(max_examples=4)
@given(data=st.data())
def test_fuzz_configuration_files_on_the_command_line(tmp_path: Path, data: st.DataObject) -> None:
    raw = _mutate(copy.deepcopy(EXAMPLE_RAW), data)
    path = tmp_path / "failover.yml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "bot", "plan", "start", "site-a", "--config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "FAILOVER_DB_URL": f"sqlite:///{tmp_path / 'none.db'}"},
    )
    assert done.returncode in (0, 2), done.stderr
    assert "Traceback" not in done.stderr
    if done.returncode == 2:
        errors = [line for line in done.stderr.splitlines() if line.startswith("failover-bot:")]
        assert len(errors) == 1, done.stderr


# ---------------------------------------------------------------------------- Settings.xml

_NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,10}", fullmatch=True).filter(
    lambda n: n.lower() != "isslave" and not n.lower().startswith("xml")
)
_TEXT = st.text(st.characters(blacklist_categories=["Cs", "Cc"]), max_size=20)


def _escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _element(name: str, attributes: dict[str, str], body: str) -> str:
    attrs = "".join(f' {k}="{_escape(v)}"' for k, v in attributes.items())
    return f"<{name}{attrs}>{body}</{name}>" if body else f"<{name}{attrs}/>"


_CHILD = st.builds(
    _element,
    _NAME,
    st.dictionaries(_NAME, _TEXT, max_size=2),
    st.one_of(
        _TEXT.map(_escape),
        _TEXT.filter(lambda t: "]]>" not in t).map(lambda t: f"<![CDATA[{t}]]>"),
        _TEXT.filter(lambda t: "--" not in t and not t.endswith("-")).map(lambda t: f"<!--{t}-->"),
    ),
)
_IS_SLAVE = st.builds(
    lambda attrs, value, pad: _element("IsSlave", attrs, f"{pad}{value}{pad}"),
    st.dictionaries(_NAME, _TEXT, max_size=2),
    st.sampled_from(["True", "False", "true", "FALSE"]),
    st.sampled_from(["", " ", "\n  "]),
)


@st.composite
def _settings_documents(draw: st.DrawFn) -> tuple[bytes, bytes, bytes, bytes | None]:
    """(before, IsSlave element or b"", after, None) of a generated Settings.xml, in its encoding."""
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    indent = draw(st.sampled_from(["", "  ", "\t"]))
    children = draw(st.lists(_CHILD, max_size=5))
    guid = draw(st.uuids()).__str__()
    children.insert(draw(st.integers(0, len(children))), f"<ServerGuid>{guid}</ServerGuid>")
    at = draw(st.integers(0, len(children)))
    is_slave = draw(st.one_of(st.none(), _IS_SLAVE))
    head = draw(st.sampled_from(["", '<?xml version="1.0" encoding="utf-8"?>' + newline]))
    bom = draw(st.sampled_from(["", "\ufeff"]))
    root = draw(_NAME)
    before = bom + head + f"<{root}>" + newline + "".join(indent + c + newline for c in children[:at]) + indent
    after = newline + "".join(indent + c + newline for c in children[at:]) + f"</{root}>" + newline
    element = is_slave or ""
    return before.encode("utf-8"), element.encode("utf-8"), after.encode("utf-8"), None


@given(doc=_settings_documents(), value=st.booleans(), add=st.booleans())
def test_fuzz_settings_xml_edits_touch_only_the_element(
    doc: tuple[bytes, bytes, bytes, None], value: bool, add: bool
) -> None:
    before, element, after, _ = doc
    content = before + element + after
    try:
        edited = settings_xml.set_is_slave(content, value, add_if_absent=add)
    except settings_xml.SettingsXmlError as exc:
        assert not element and not add, exc  # only "no IsSlave element" may refuse a well-formed file
        return
    assert settings_xml.read_is_slave(edited) in ((value,) if element or (add and value) else (None, False))
    if element:
        assert edited.startswith(before) and edited.endswith(after)  # only the element's bytes may differ
    else:
        prefix = len(bytes(_common_prefix(content, edited)))
        assert edited[prefix + len(edited) - len(content) :] == content[prefix:]  # a pure insertion
    preview = settings_xml.settings_change(content, edited, filename="Settings.xml")
    assert len(preview.splitlines()) in (0, 3)
    for line in preview.splitlines()[1:]:  # the element before and after: nothing else of the file
        assert line[2:] == "(no IsSlave element)" or (line[2:].startswith("<IsSlave") and line.endswith("IsSlave>"))


def _common_prefix(a: bytes, b: bytes) -> bytes:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


_JUNK = [
    b"<",
    b">",
    b"&",
    b"]]>",
    b"\xff",
    b"\x00",
    b"<IsSlave>True</IsSlave>",
    b'<!DOCTYPE x [<!ENTITY e "x">]>',
    b"</",
]
_MALFORMED = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda doc, at, junk: (doc[0] + doc[1] + doc[2])[:at] + junk + (doc[0] + doc[1] + doc[2])[at:],
        _settings_documents(),
        st.integers(0, 400),
        st.sampled_from(
            [
                b"<",
                b">",
                b"&",
                b"]]>",
                b"\xff",
                b"\x00",
                b"<IsSlave>True</IsSlave>",
                b'<!DOCTYPE x [<!ENTITY e "x">]>',
                b"</",
            ]
        ),
    ),
)


@given(content=_MALFORMED, value=st.booleans())
def test_fuzz_settings_xml_refuses_malformed_input_with_its_own_error(content: bytes, value: bool) -> None:
    for read in (settings_xml.read_is_slave, settings_xml.read_server_guid):
        try:
            read(content)
        except settings_xml.SettingsXmlError as exc:  # its own error, one clear line
            assert str(exc) and "\n" not in str(exc)
    try:
        edited = settings_xml.set_is_slave(content, value, add_if_absent=True)
    except settings_xml.SettingsXmlError:
        return
    assert settings_xml.read_is_slave(edited) in (value, None)


# ---------------------------------------------------------------------------- host output


class _Answers:
    """An executor whose host answers ``result`` to every operation."""

    def __init__(self, result: dict[str, Any]) -> None:
        self.result = result

    def run(self, host: Any, op: str, data: dict[str, Any], *, timeout_s: float | None = None) -> dict[str, Any]:
        return self.result


_RESULT_FIELDS = st.sampled_from(
    [
        "ok",
        "error",
        "hostname",
        "ps_version",
        "state",
        "changed",
        "exists",
        "content_b64",
        "sha256",
        "is_dir",
        "created",
        "already_waiting",
        "path",
        "backup_path",
        "folder_exists",
        "waiting",
    ]
)
_RESULTS = st.dictionaries(_RESULT_FIELDS, _JSON | st.sampled_from(["é", "AAAA", "Running", "Stopped"]), max_size=8)
_STDOUT = st.one_of(
    st.text(max_size=200),
    _RESULTS.map(lambda r: "progress\n" + json.dumps(r)),
    st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
)
_STDERR = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=80).map(
        lambda t: ('#< CLIXML\r\n<Objs><S S="Error">' + _escape(t) + "_x000D__x000A_</S></Objs>").encode()
    ),
)


@settings(max_examples=300)
@given(stdout=_STDOUT, stderr=_STDERR, rc=st.integers(-1, 300))
@example(stdout='{"ok": true, "exists": true, "content_b64": "\u00e9", "sha256": "x"}', stderr=b"", rc=0)
def test_fuzz_host_output_parses_into_a_result_or_an_execution_error(stdout: str, stderr: bytes, rc: int) -> None:
    host = load_config(EXAMPLE_CONFIG).host("as-b")
    assert isinstance(clixml_to_text(stderr), str)
    try:
        result = WinRMExecutor._result(host, "file.read", rc, stdout.encode("utf-8", "surrogatepass"), stderr)
    except ExecutionError:
        return
    executor = _Answers(result)
    calls = [
        lambda: remote.host_info(executor, host),
        lambda: remote.query_service(executor, host, "S"),
        lambda: remote.stop_service(executor, host, "S", 1),
        lambda: remote.read_file(executor, host, r"C:\x"),
        lambda: remote.replace_file(executor, host, r"C:\x", b"new", "0" * 64),
        lambda: remote.path_exists(executor, host, r"C:\x"),
        lambda: remote.drop_task_file(executor, host, r"C:\q"),
        lambda: remote.task_queue_status(executor, host, r"C:\q"),
    ]
    for call in calls:
        try:
            call()
        except ExecutionError:
            pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(result=_RESULTS)
def test_fuzz_result_fields(result: dict[str, Any]) -> None:
    test_fuzz_host_output_parses_into_a_result_or_an_execution_error.hypothesis.inner_test(  # type: ignore[attr-defined]
        "x\n" + json.dumps({**result, "ok": True}), b"", 0
    )
