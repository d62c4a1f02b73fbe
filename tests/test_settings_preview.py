"""The Settings.xml preview leaves the host with the changed element and the masked ServerGuid only (finding 9)."""

from __future__ import annotations

import json
from pathlib import Path

from bot.runs.machine import StepState
from bot.slack_ids import ActionId
from bot.store import audit
from sandbox.rehearsal import rehearsal
from tests.support.platform import write_config

ALICE = "U0ALICE"
SECRETS = ("smtp-hunter2", "SmtpAuth", "cdata-s3cret")


def test_f2_preview_in_slack_the_store_and_the_audit_holds_no_other_line_of_the_file(tmp_path: Path) -> None:
    with rehearsal(write_config(tmp_path / "cfg"), tmp_path / "state") as rh:
        settings = tmp_path / "state" / "as-b" / "C" / "ProgramData" / "Attix5 Pro" / "AS_Service" / "Settings.xml"
        content = settings.read_bytes()
        anchor = b"</IsSlave>\r\n"
        assert anchor in content
        extra = b'  <add key="SmtpAuth" value="smtp-hunter2"/>\r\n  <Notes><![CDATA[Pwd=cdata-s3cret]]></Notes>\r\n'
        settings.write_bytes(content.replace(anchor, anchor + extra))
        for host in ("as-a", "ss-a1", "ss-a2"):
            rh.faults(host, refuse=True)
        fo = rh.start(ALICE, "start site-a")
        rh.settled(fo)
        rh.click(ALICE, fo, "F1", ActionId.APPROVE)
        rh.wait_until(
            "F2 posted", lambda: rh.service.view(fo).step("F2").state == StepState.AWAITING_APPROVAL, timeout=30
        )
        card = str(rh.message_of(fo, "F2").blocks)
        preview = rh.service.view(fo).step("F2").row.preview or ""
        assert "IsSlave" in preview and "True" in preview and "False" in preview
        assert "ServerGuid ********-****-****-****-" in preview
        assert len(preview.splitlines()) == 3
        assert "+ &lt;IsSlave" in card  # the card shows it (escaped for mrkdwn)
        with rh.service.store.session() as s:
            events = json.dumps([e.detail for e in audit.events_of(s, fo)])
        for secret in SECRETS:
            assert secret not in preview
            assert secret not in rh.slack.all_text()
            assert secret not in events
