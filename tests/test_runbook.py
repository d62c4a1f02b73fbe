"""Resolving the runbooks against the example configuration, and the `plan` text built from them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.config import Config, load_config
from bot.errors import UsageError
from bot.render.plan import format_plan
from bot.runs.runbook import (
    RunbookError,
    RunOptions,
    kb_lines,
    load_runbook,
    parse_options,
    parse_runbook,
    resolve,
)
from tests.support.paths import EXAMPLE_CONFIG

GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def ids(*parts: str | range, prefix: str = "B") -> list[str]:
    out: list[str] = []
    for part in parts:
        out += [f"{prefix}{i}" for i in part] if isinstance(part, range) else [part]
    return out


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(EXAMPLE_CONFIG)


# --------------------------------------------------------------------------- which steps


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("all", ids(range(0, 9), prefix="F")),
        ("account", [*ids(range(0, 5), prefix="F"), "F8"]),  # v3: the DNS decision moves with the AccountServer
        ("storage", ["F0", "F5", "F6", "F7"]),
    ],
)
def test_failover_scopes(config: Config, scope: str, expected: list[str]) -> None:
    plan = resolve(config, "failover", "site-a", parse_options("failover", [f"scope={scope}"]))
    assert list(plan.ids) == expected
    assert [s.index for s in plan.steps] == list(range(1, len(expected) + 1))
    assert (plan.site, plan.partner) == ("site-a", "site-b")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ids(range(1, 5), "B4b", range(5, 38))),
        (["scope=account"], ids(range(1, 5), "B4b", range(5, 7), range(13, 25))),
        (["scope=storage"], ids(range(7, 13), range(25, 38))),  # v3: B37 belongs to the StorageServers
        (["rebuilt"], ["R0", "R1", "R1b", "R1c", "R2", "R3", *ids(range(13, 38))]),
        (["rebuilt", "scope=account"], ["R0", "R1", "R1b", "R1c", *ids(range(13, 25))]),
        (["scope=storage", "rebuilt"], ["R0", "R2", "R3", *ids(range(25, 38))]),
    ],
)
def test_failback_scopes_and_rebuilt_variant(config: Config, args: list[str], expected: list[str]) -> None:
    plan = resolve(config, "failback", "site-a", parse_options("failback", args))
    assert list(plan.ids) == expected


# --------------------------------------------------------------------------- targets and values


def test_fan_out_targets_pair_each_storage_server_with_its_mirror(config: Config) -> None:
    plan = resolve(config, "failover", "site-a", RunOptions())
    f6 = plan.step("F6")
    assert [t.key for t in f6.targets] == ["ss-a1", "ss-a2"]
    assert all(t.host is None for t in f6.targets)  # a person does it in the Console
    assert [t.values["ms"] for t in f6.targets] == ["ms-b1", "ms-b2"]
    assert f6.targets[1].values["ms_endpoint"] == "127.0.20.22:443"
    assert f6.targets[1].values["ss_endpoint"] == "127.0.10.22:8443"
    assert f6.targets[0].label == "ss-a1 (127.0.10.21:443) → ms-b1 (127.0.20.21:443)"
    assert "enter host 127.0.20.22 and port 443 (ms-b2)" in f6.instructions
    assert plan.pairs == (("ss-a1", "ms-b1"), ("ss-a2", "ms-b2"))

    back = resolve(config, "failback", "site-a", RunOptions())
    assert [t.host for t in back.step("B8").targets] == ["ss-a1", "ss-a2"]
    assert [t.host for t in back.step("B29").targets] == ["ms-b1", "ms-b2"]
    assert [t.values["otp_host"] for t in back.step("B33").targets] == ["ms-b1", "ms-b2"]
    assert [t.values["otp_host"] for t in back.step("B9").targets] == ["ss-a1", "ss-a2"]
    b11 = back.step("B11")
    assert (
        "DELETE mirror registration ms-b2 at 127.0.20.22:443 · KEEP StorageServer entry ss-a2 (may show as ms-b2) "
        "at 127.0.20.22:443 · KEEP mirror registration ss-a2 at 127.0.10.22:8443" in b11.instructions
    )
    assert back.step("B27").targets[0].label == "ms-b1 (127.0.20.21:443) → ss-a1 (127.0.10.21:443)"


def test_single_host_targets_and_current_master(config: Config) -> None:
    plan = resolve(config, "failover", "site-a", RunOptions())
    f2 = plan.step("F2")
    assert (f2.targets[0].key, f2.targets[0].host) == ("as-b", "as-b")
    f4 = plan.step("F4")
    assert f4.targets[0].host == "as-b"
    assert f4.targets[0].label == "current Master (expected as-b)"
    back = resolve(config, "failback", "site-a", RunOptions())
    assert back.step("B35").targets[0].label == "current Master (expected as-a)"
    assert back.step("B4").targets[0].key == "db" and back.step("B4").expected_master == "as-b"
    assert back.step("B1").targets[0].host == "as-a"
    assert back.step("B21").targets[0].host == "as-b"
    assert back.step("B4b").targets[0].values["otp_host"] == "as-a"
    # only StorageServers move: the Master AccountServer stays at the site that has it
    storage_only = resolve(config, "failover", "site-a", RunOptions(scope="storage"))
    assert storage_only.step("F7").targets[0].host == "as-a"


def test_instructions_are_fully_rendered_in_every_plan(config: Config) -> None:
    for direction, args in [
        ("failover", []),
        ("failback", []),
        ("failback", ["rebuilt"]),
        ("failover", ["scope=storage"]),
    ]:
        plan = resolve(config, direction, "site-a", parse_options(direction, args))  # type: ignore[arg-type]
        for step in plan.steps:
            assert "{" not in step.instructions and "}" not in step.instructions, step.id
            for target in step.targets:
                assert target.values["site"] == "site-a"
    plan = resolve(config, "failover", "site-b", RunOptions(scope="account"))
    assert plan.step("F1").targets[0].host == "as-a"
    assert "Stop the Windows service Attix5ProAccountServer on as-a (127.0.10.10:443)" in plan.step("F1").instructions


def test_facts_choices_and_conditions(config: Config) -> None:
    failover = resolve(config, "failover", "site-a", RunOptions())
    f8 = failover.step("F8")
    assert f8.optional and f8.spec.choices == ("done", "done_with_dns_redirect")
    assert f8.spec.records == "dns_redirected"
    assert "backup.example.test" in f8.instructions
    back = resolve(config, "failback", "site-a", RunOptions())
    assert dict(back.step("B4b").spec.when or {}) == {"step": "B4", "outcome": "needs_console"}
    assert dict(back.step("B20").spec.when or {}) == {"fact": "dns_redirected", "not_equals": "done"}
    assert back.step("B34").spec.choices == ("reenabled", "left_disabled")
    assert back.step("B25").spec.records == "disabled_groups"
    assert back.step("B22").spec.origin == "resolves"
    assert dict(back.step("B1").params) == {"service": "account_server", "check_no_running_slave": True}
    assert back.step("B29").params["read_guid"] is True
    assert back.step("B21").params["attributes"] == {"choices": "True,False", "default": "False"}


# --------------------------------------------------------------------------- options


def test_storage_subset(config: Config) -> None:
    plan = resolve(config, "failover", "site-a", parse_options("failover", ["storage=ss-a2"]))
    assert [t.key for t in plan.step("F6").targets] == ["ss-a2"]
    assert plan.pairs == (("ss-a2", "ms-b2"),)
    assert "ss-a1" not in plan.step("F6").instructions


def test_parse_options_accepts_the_documented_forms() -> None:
    assert parse_options("failover", []) == RunOptions()
    assert parse_options("failover", ["scope=storage", "storage=ss-a1, ss-a2"]) == RunOptions(
        scope="storage", storage=("ss-a1", "ss-a2")
    )
    assert parse_options("failback", ["rebuilt", "scope=account"]) == RunOptions(scope="account", rebuilt=True)


@pytest.mark.parametrize(
    ("direction", "args", "message"),
    [
        ("failover", ["scope=bogus"], "unknown scope 'bogus': use scope=all, scope=account or scope=storage"),
        ("failover", ["rebuilt"], "rebuilt applies only to failback"),
        ("failover", ["frobnicate"], "unknown option 'frobnicate'; failover takes scope=all|account|storage"),
        ("failback", ["scope=all", "scope=account"], "scope= given more than once"),
        ("failback", ["storage="], "storage= needs StorageServer names"),
    ],
)
def test_bad_options_are_usage_errors(direction: str, args: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_options(direction, args)  # type: ignore[arg-type]


def test_unknown_storage_server_names_the_valid_ones(config: Config) -> None:
    with pytest.raises(
        UsageError, match=re.escape("unknown StorageServer(s) nope at site-a (its StorageServers: ss-a1, ss-a2)")
    ):
        resolve(config, "failover", "site-a", parse_options("failover", ["storage=nope"]))
    with pytest.raises(UsageError, match="storage= applies only with scope=all or scope=storage"):
        resolve(config, "failover", "site-a", RunOptions(scope="account", storage=("ss-a1",)))
    with pytest.raises(UsageError, match="unknown site 'site-z'"):
        resolve(config, "failover", "site-z", RunOptions())
    with pytest.raises(UsageError, match="rebuilt applies only to failback"):
        resolve(config, "failover", "site-a", RunOptions(rebuilt=True))


def test_a_storage_server_without_a_mirror_cannot_be_failed_over(config: Config, tmp_path: Path) -> None:
    # site-b's StorageServers are the MirrorServers: they have no mirror of their own
    with pytest.raises(UsageError, match="ms-b1, ms-b2 has no MirrorServer at site-a"):
        resolve(config, "failover", "site-b", RunOptions())
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8").replace("        mirror: ms-b2\n", "")
    path = tmp_path / "one-mirror.yml"
    path.write_text(text, encoding="utf-8")
    one = load_config(path)
    with pytest.raises(UsageError, match="ss-a2 has no MirrorServer at site-b"):
        resolve(one, "failover", "site-a", RunOptions())
    assert resolve(one, "failover", "site-a", RunOptions(storage=("ss-a1",))).pairs == (("ss-a1", "ms-b1"),)


# --------------------------------------------------------------------------- risk and approvals


def test_destructive_steps_are_exactly_the_deletes(config: Config) -> None:
    specs = load_runbook("failover") + load_runbook("failback")
    assert [s.id for s in specs if s.risk == "destructive"] == ["R0", "B11", "B28"]


def test_approvals_needed(config: Config) -> None:
    back = resolve(config, "failback", "site-a", RunOptions())
    assert back.step("B11").approvals_needed(2) == 2
    assert back.step("B28").approvals_needed(3) == 3
    assert back.step("B28").is_destructive
    assert back.step("B2").approvals_needed(2) == 1  # host change: one approval
    assert back.step("B4").approvals_needed(2) == 1  # sql change
    assert back.step("B3").approvals_needed(2) == 0  # read-only probe
    assert back.step("B7").approvals_needed(2) == 0
    assert back.step("B6").approvals_needed(2) == 1  # a person confirms
    assert back.step("B26").approvals_needed(2) == 1  # a person's Done on a wait
    failover = resolve(config, "failover", "site-a", RunOptions())
    assert failover.step("F0").approvals_needed(2) == 0  # the bot's own preflight
    assert failover.step("F5").approvals_needed(2) == 1


# --------------------------------------------------------------------------- plan text


def test_format_plan_shows_concrete_values(config: Config) -> None:
    text = format_plan(resolve(config, "failover", "site-a", RunOptions()), config)
    assert text.startswith("Failover of site-a (site-a → site-b)")
    assert " 3. F2   as-b  host/change  approvals: 1  KB 11–12" in text
    assert "127.0.20.21:443" in text
    assert "C:\\ProgramData\\Attix5 Pro\\AS_Service\\Settings.xml" in text
    assert "Attix5ProAccountServer" in text
    assert "C:\\ProgramData\\Attix5 Pro\\AS_Service\\TaskQueue\\Failover.UpdateSettingsOnSS" in text
    assert "as-b (current Master)" in text
    assert (
        "right-click the StorageServer entry ss-a1 (now at 127.0.10.21:443) > Advanced > Change StorageServer" in text
    )

    back = format_plan(resolve(config, "failback", "site-a", parse_options("failback", ["storage=ss-a1"])), config)
    assert (
        "scope: all   StorageServers: ss-a1 (127.0.10.21:443) ← ms-b1 (127.0.20.21:443) (subset)   rebuilt: no" in back
    )
    assert (
        "one-time password: first 8 characters of ss-a1's ServerGuid (read at B7; revealed in Slack on request)" in back
    )
    assert (
        "one-time password: first 8 characters of ms-b1's ServerGuid (read at B29; revealed in Slack on request)"
        in back
    )
    assert "manual/destructive  approvals: 2" in back
    assert "ss-a2" not in back
    rebuilt = format_plan(resolve(config, "failback", "site-a", RunOptions(rebuilt=True)), config)
    assert "first 8 characters of as-a's ServerGuid (read at R1b; revealed in Slack on request)" in rebuilt


def test_format_plan_never_shows_a_guid_or_an_otp(config: Config) -> None:
    guid = "a40b132e-b8b1-4316-b1f2-c27d301ad2e5"
    plan = resolve(config, "failback", "site-a", RunOptions())
    text = format_plan(plan, config, live_values={"ss-a1": guid, "as-a": "{" + guid.upper() + "}"})
    assert "a40b132e" not in text.lower()  # the one-time password
    assert not GUID.search(text)
    assert "********-****-****-****-c27d301ad2e5" in text  # shown masked: last 12 characters
    assert "read now: ss-a1: ********-****-****-****-c27d301ad2e5" in text


def test_kb_lines_collapse_ranges() -> None:
    assert kb_lines((11, 12)) == "11–12"
    assert kb_lines((19, 52)) == "19, 52"
    assert kb_lines((29, 30, 31, 40)) == "29–31, 40"


# --------------------------------------------------------------------------- YAML validation

_VALID = """
- id: X1
  title: Stop it
  kind: host
  risk: change
  target: as_s
  action: service.stop
  params: {service: account_server}
  scopes: [account]
  instructions: Stop {as_service} on {as_s.name}.
  source: [10]
"""


def test_runbook_yaml_is_validated() -> None:
    (step,) = parse_runbook(_VALID, "failover")
    assert step.id == "X1" and step.source == (10,) and step.fanout is False
    with pytest.raises(RunbookError, match="step X1: unknown key.*colour"):
        parse_runbook(_VALID + "  colour: red\n", "failover")
    with pytest.raises(RunbookError, match="action 'service.frobnicate' is not one of"):
        parse_runbook(_VALID.replace("service.stop", "service.frobnicate"), "failover")
    with pytest.raises(RunbookError, match="target 'as_x' is not one of"):
        parse_runbook(_VALID.replace("target: as_s", "target: as_x"), "failover")
    with pytest.raises(RunbookError, match="action service.stop needs kind host, not manual"):
        parse_runbook(_VALID.replace("kind: host", "kind: manual"), "failover")
    with pytest.raises(RunbookError, match="risk 'scary' is not one of"):
        parse_runbook(_VALID.replace("risk: change", "risk: scary"), "failover")
    with pytest.raises(RunbookError, match=r"unknown placeholder \{as_s.nmae\}"):
        parse_runbook(_VALID.replace("{as_s.name}", "{as_s.nmae}"), "failover")
    with pytest.raises(RunbookError, match="missing required key"):
        parse_runbook(_VALID.replace("  source: [10]\n", ""), "failover")
    with pytest.raises(RunbookError, match="variant applies only to failback"):
        parse_runbook(_VALID + "  variant: rebuilt\n", "failover")


def test_packaged_runbooks_load_once() -> None:
    assert load_runbook("failback") is load_runbook("failback")
    assert len(load_runbook("failover")) == 9


# --------------------------------------------------------------------------- what a destructive step deletes


def ten_pair_config(tmp_path: Path) -> Config:
    """The example platform with ten StorageServers at site-a, each mirrored at site-b."""
    import yaml

    raw = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    a, b = raw["sites"]["site-a"], raw["sites"]["site-b"]
    a_tpl, b_tpl = a["storage_servers"][0], b["storage_servers"][0]
    a["storage_servers"], b["storage_servers"] = [], []
    for i in range(1, 11):
        a["storage_servers"].append(
            {**a_tpl, "name": f"ss-a{i}", "address": f"127.0.10.{20 + i}", "mirror": f"ms-b{i}",
             "winrm": f"http://127.0.0.1:{45110 + i}/wsman"}
        )  # fmt: skip
        b["storage_servers"].append(
            {
                **b_tpl,
                "name": f"ms-b{i}",
                "address": f"127.0.20.{20 + i}",
                "winrm": f"http://127.0.0.1:{45210 + i}/wsman",
            }
        )
        b["storage_servers"][-1].pop("mirror", None)
    path = tmp_path / "ten.yml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


def _destructive_steps(config: Config) -> list:  # type: ignore[type-arg]
    out = []
    for args in ([], ["rebuilt"], ["scope=storage"], ["scope=account", "rebuilt"], ["scope=storage", "rebuilt"]):
        plan = resolve(config, "failback", "site-a", parse_options("failback", args))
        out += [(" ".join(args), s) for s in plan.steps if s.is_destructive]
    return out


@pytest.mark.parametrize("platform", ["example", "ten pairs"])
def test_every_delete_line_differs_from_every_keep_line(config: Config, tmp_path: Path, platform: str) -> None:
    """Issue 9 item 1: a destructive step names what it deletes and what it keeps, each with role, Console name
    and address:port; nothing deleted looks like anything kept in both role and address."""
    from bot.runs.runbook import deletion_line

    cfg = config if platform == "example" else ten_pair_config(tmp_path)
    steps = _destructive_steps(cfg)
    assert {s.id for _, s in steps} == {"B11", "B28", "R0"}
    pairs = 2 if platform == "example" else 10
    for args, step in steps:
        deletions = step.deletions
        assert deletions, (args, step.id)
        if step.id in ("B11", "B28"):
            assert len(deletions) == pairs
        deletes = [d.delete for d in deletions]
        keeps = [k for d in deletions for k in d.keep]
        for gone in deletes:
            for kept in keeps:
                assert (gone.role, gone.endpoint) != (kept.role, kept.endpoint), (args, step.id, gone, kept)
        for d in deletions:
            line = deletion_line(d)
            assert line.startswith(f"DELETE {d.delete.role} {d.delete.name}") and f" at {d.delete.endpoint}" in line
            assert all(f"KEEP {k.role} {k.name}" in line and k.endpoint in line for k in d.keep)
            assert line in step.instructions  # the card and the plan show exactly this line
    b28 = next(s for _, s in steps if s.id == "B28")
    assert deletion_line(b28.deletions[0]) == (
        f"DELETE mirror registration ss-a1 at {cfg.host('ss-a1').endpoint} · "
        f"KEEP StorageServer entry ss-a1 (may show as ms-b1) at {cfg.host('ms-b1').endpoint}"
    )


def test_every_change_the_bot_makes_says_how_to_undo_it(config: Config) -> None:
    """Issue 9 item 16: each change step's card says how to put it back if a later step fails."""
    for direction, args in [("failover", []), ("failback", []), ("failback", ["rebuilt"])]:
        plan = resolve(config, direction, "site-a", parse_options(direction, args))  # type: ignore[arg-type]
        for step in plan.steps:
            if step.kind in ("host", "sql") and step.risk == "change":
                assert "\nIf a later step fails: " in step.instructions, step.id
    f2 = resolve(config, "failover", "site-a", RunOptions()).step("F2")
    assert r"C:\ProgramData\Attix5 Pro\AS_Service\Settings.xml.<UTC time>.bak" in f2.instructions
    assert "copy that .bak file back over" in f2.instructions


def test_long_waits_are_nudged_not_escalated(config: Config) -> None:
    """Issue 9 item 14: mirroring and database backups that take hours are waits, whatever their kind."""
    plan = resolve(config, "failback", "site-a", RunOptions())
    assert [s.id for s in plan.steps if s.is_wait] == ["B12", "B23", "B26"]
    rebuilt = resolve(config, "failback", "site-a", RunOptions(rebuilt=True))
    assert [s.id for s in rebuilt.steps if s.is_wait] == ["R1", "R2", "R3", "B23", "B26"]
    assert "press Done once mirroring is complete for every pair" in plan.step("B12").instructions
    assert "Press Done per pair" not in plan.step("B12").instructions


def test_f0_says_what_it_checks_for_the_scope(config: Config) -> None:
    """Issue 9 item 15: no split-brain promise for scope=storage; only the MirrorServers in scope must be healthy."""
    storage = resolve(config, "failover", "site-a", parse_options("failover", ["scope=storage", "storage=ss-a2"]))
    text = storage.step("F0").instructions
    assert "no role check and no split-brain guard" in text and "Split-brain guard" not in text
    assert "the MirrorServer ms-b2" in text and "ms-b1" not in text
    account = resolve(config, "failover", "site-a", RunOptions(scope="account")).step("F0").instructions
    assert "Split-brain guard" in account and "MirrorServer" not in account
    assert "as-b must be a Slave (IsSlave True)" in account


def test_a_completed_failover_warns_that_the_old_master_comes_back_as_a_master(config: Config) -> None:
    """Issue 9 item 16: the last message of a failover that moved the AccountServer."""
    from bot.runs.runbook import completion_note

    note = completion_note(config, resolve(config, "failover", "site-a", RunOptions(scope="account")))
    assert "as-a at site-a still has IsSlave False" in note and "second Master" in note
    assert "Keep Attix5ProAccountServer on as-a stopped" in note
    assert completion_note(config, resolve(config, "failover", "site-a", RunOptions(scope="storage"))) == ""
    assert completion_note(config, resolve(config, "failback", "site-a", RunOptions())) == ""
