"""The database step (B4): re-point the Slave AccountServer's BackupServer row at the demoted Master."""

from __future__ import annotations

from typing import TYPE_CHECKING

from actions import settings_xml
from actions.backup_server import row_preview
from actions.base import Outcome, Step, StepContext, Target
from actions.errors import SlaveRowCount
from actions.guid import check_guid_unchanged, guid_fact, mask_guid
from actions.hosts import Host
from actions.reads import current_master, read_settings, verify_database

if TYPE_CHECKING:  # the database module loads pyodbc; this step only calls what ctx.database opens
    from actions.storage_platform_db import StoragePlatformDb


class PointSlaveRow:
    """B4: re-point the Slave AccountServer's BackupServer row at the demoted Master, if the GUIDs match.

    The database is the current Master's (its site's), verified before any write to be the one that
    AccountServer's Settings.xml names. Outcomes recorded as ``outcome:B4``: ``matched`` (row edited),
    ``needs_console`` (a different ServerGUID, no Slave row or several: B4b adds it in the Console). A wrong
    or unreachable database fails the step (no B4b: the AccountServer would be added twice, KB line 33).
    """

    def _guid(self, ctx: StepContext) -> str:
        # Read again from the host (only a masked GUID and a hash are kept), and compare with what B1 read.
        guid = settings_xml.read_server_guid(read_settings(ctx, ctx.as_p).content)
        check_guid_unchanged(ctx.as_p.name, guid, ctx.facts.get(guid_fact(ctx.as_p.name)))
        return guid

    def _database(self, ctx: StepContext) -> tuple[Host, StoragePlatformDb]:
        master = current_master(ctx)
        return master, verify_database(ctx, master.site)

    def preview(self, ctx: StepContext, step: Step, target: Target) -> str:
        master, db = self._database(ctx)
        where = f"StoragePlatform database of {master.name} (verified: {db.identity().shown()})"
        guid = self._guid(ctx)
        try:
            before = db.slave_account_server_row()
        except SlaveRowCount as exc:
            return f"{where}: {exc}. Nothing will be changed here; B4b adds {ctx.as_p.name} in the Console."
        if not settings_xml.normalise_guid(before.guid) == settings_xml.normalise_guid(guid):
            return (
                f"{where}: the Slave AccountServer row's ServerGUID does not match "
                f"{ctx.as_p.name}'s ({mask_guid(guid)}): nothing will be changed here; "
                "B4b adds it in the Console.\n" + row_preview(before, None)
            )
        after = type(before)(guid=before.guid, ip=ctx.as_p.address, online=True, role=before.role, raw={})
        return f"{where}: UPDATE one row of {ctx.config.db.table}:\n" + row_preview(before, after)

    def run(self, ctx: StepContext, step: Step, target: Target) -> Outcome:
        master, db = self._database(ctx)
        facts_key = f"outcome:{step.id}"
        try:
            out = db.point_slave_row_at(self._guid(ctx), ctx.as_p.address)
        except SlaveRowCount as exc:
            found = "no_slave_row" if exc.count == 0 else "several_slave_rows"
            summary = f"{exc}; add {ctx.as_p.name} in the Console (next step)"
            return Outcome(summary, {"outcome": found, "changed": False, "database_of": master.name},
                           {facts_key: "needs_console"})  # fmt: skip
        if out.matched:
            summary = f"Slave AccountServer row now IP {ctx.as_p.address}, OnLine true" + (
                "" if out.changed else " (already)"
            )
            result = {"outcome": "matched", "changed": out.changed, "database_of": master.name}
            return Outcome(summary, result, {facts_key: "matched"})
        summary = "ServerGUIDs differ: nothing changed; add the AccountServer in the Console (next step)"
        result = {"outcome": "guid_mismatch", "changed": False, "database_of": master.name}
        return Outcome(summary, result, {facts_key: "needs_console"})

    def probe(self, ctx: StepContext, step: Step, target: Target) -> bool | None:
        return ctx.database(current_master(ctx).site).slave_row_points_at(self._guid(ctx), ctx.as_p.address)
