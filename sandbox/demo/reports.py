"""The demo's last phase: each run's audit report and attachments written out, and nothing secret anywhere."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from actions import settings_xml
from sandbox.demo.cast import WINRM_PASSWORD
from sandbox.demo.facts import server_guid
from sandbox.demo.printing import Demo, RunOutcome
from sandbox.slack_api import UploadedFile

if TYPE_CHECKING:
    from sandbox.rehearsal import Rehearsal


def secret_values(r: Rehearsal) -> list[tuple[str, str]]:
    from sandbox.rehearsal import BOT_TOKEN, SIGNING_SECRET

    found = [("WinRM password", WINRM_PASSWORD), ("signing secret", SIGNING_SECRET), ("bot token", BOT_TOKEN)]
    for host in r.config.hosts():
        guid = server_guid(r, host)
        if guid:
            found.append((f"{host.name}'s ServerGuid", guid))
            found.append((f"{host.name}'s one-time password", settings_xml.otp_from_guid(guid)))
    return found


def find_leaks(text: str, secrets: list[tuple[str, str]]) -> list[str]:
    lowered = text.lower()
    return sorted({label for label, value in secrets if value and value.lower() in lowered})


def _attached_files(r: Rehearsal, run_id: str, timeout: float = 60.0) -> list[UploadedFile]:
    """The files the bot attached in the run's thread (its report and timeline), once both are there."""
    run = r.service.get_run(run_id)
    if not run.thread_ts:
        return []

    def both() -> list[UploadedFile]:
        found = r.slack.files(run.channel, run.thread_ts)
        return found if len(found) >= 2 else []

    try:
        return r.slack.wait_for(both, timeout=timeout, what=f"the report of {run_id} in its thread")
    except TimeoutError:
        return r.slack.files(run.channel, run.thread_ts)


def write_reports(demo: Demo, r: Rehearsal, out_dir: Path, runs: list[RunOutcome]) -> None:
    from bot.report import build_report

    written: list[Path] = []
    intact: dict[str, bool] = {}
    attached: dict[str, list[str]] = {}
    for run in runs:
        report = build_report(r.runtime.store, run.run_id)
        path = out_dir / f"{run.run_id}.md"
        # the report and its timeline as the bot attached them in the run's thread when the run ended
        uploaded = _attached_files(r, run.run_id)
        attached[run.run_id] = [f.filename for f in uploaded]
        by_name = {f.filename: f.content or b"" for f in uploaded}
        path.write_bytes(by_name.get(f"{run.run_id}-report.md") or report.to_markdown().encode("utf-8"))
        picture = by_name.get(f"{run.run_id}-timeline.png")
        if picture:
            (out_dir / f"{run.run_id}-timeline.png").write_bytes(picture)
        (out_dir / f"{run.run_id}-thread.txt").write_text(run.thread + "\n", encoding="utf-8")
        written.append(path)
        intact[run.run_id] = report.chain_intact
        chain = "hash chain intact" if report.chain_intact else "hash chain BROKEN"
        demo.say(
            f"  {run.run_id}: {path}  ({len(report.events)} audit events, {chain}; thread: {run.run_id}-thread.txt"
            + (f"; timeline: {run.run_id}-timeline.png" if picture else "")
            + ")"
        )
    demo.check(
        "Audit and secrets",
        "each run's thread got its summary, the full report and the timeline picture as files",
        bool(attached)
        and all(names == [f"{run_id}-report.md", f"{run_id}-timeline.png"] for run_id, names in attached.items()),
        f"attached: {attached}",
    )
    demo.say(f"  Bot log: {out_dir / 'demo.log'};  the bot's database: {out_dir / 'failover-bot.db'}")
    if runs:
        demo.say(
            f"  Read a report again: FAILOVER_DB_URL=sqlite:///{out_dir / 'failover-bot.db'} "
            f"failover-bot report {runs[0].run_id}"
        )
    demo.check(
        "Audit and secrets",
        f"audit reports written, hash chains intact ({', '.join(intact)})",
        bool(written) and all(p.is_file() and p.stat().st_size > 0 for p in written) and all(intact.values()),
        f"chains: {intact}",
    )
    public = [
        m.text + repr(m.blocks)
        for channel in {r.service.get_run(run.run_id).channel for run in runs}
        for m in r.slack.channel_messages(channel) + [m for run in runs for m in r.thread(run.run_id)]
    ]
    files = [p.read_text(encoding="utf-8") for p in written]
    log_file = out_dir / "demo.log"
    files.append(log_file.read_text(encoding="utf-8", errors="replace") if log_file.exists() else "")
    leaks = find_leaks("\n".join(public + files), demo.secrets)
    demo.check(
        "Audit and secrets",
        "no one-time password, ServerGuid or credential in the threads, the channel, the reports or the log",
        not leaks,
        f"found: {', '.join(leaks)}",
    )
