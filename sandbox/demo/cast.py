"""The demo's cast and set: the example platform, the site that goes down, three people and the channel."""

from __future__ import annotations

from pathlib import Path

from sandbox.slack_api import BOT_USER_ID

EXAMPLE_CONFIG = Path(__file__).parent.with_name("example-config.yml")  # sandbox/example-config.yml
# As on a domain network, two hosts of the example platform authenticate with NTLM: one over plain HTTP
# with WinRM message encryption, one over HTTPS validated against the simulated platform's test CA.
NTLM_HOST = "as-b"
HTTPS_HOST = "ms-b1"
SITE = "site-a"
ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
CHANNEL = "C0INCIDENT"  # the incident channel of the example configuration
PEOPLE = {ALICE: "alice", BOB: "bob", CAROL: "carol"}
NAMES = {**PEOPLE, BOT_USER_ID: "failover-bot", CHANNEL: "incident"}
WINRM_USER, WINRM_PASSWORD = "demo-admin", "demo-password-not-secret"
CHANGING = ("service.stop", "service.start", "service.restart", "file.replace", "taskqueue.drop")
ACTION_NAMES = {
    "step_approve": "Approve",
    "step_done": "Done",
    "step_reveal_otp": "Reveal one-time password",
    "step_mark_done": "Mark done",
    "step_retry": "Retry",
    "step_skip": "Skip",
}
CONSUME_DEADLINE_S = 10.0
CARD_DEADLINE_S = 10.0
