"""StoragePlatform database actions against real ODBC drivers (SQLite3 and PostgreSQL Unicode) through unixODBC."""

from __future__ import annotations

import os
import secrets
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pyodbc
import pytest

from actions.backup_server import BackupServerRow, online_flag, row_preview, same_guid
from actions.guid import mask_guid
from actions.storage_platform_db import StoragePlatformDb
from bot.config import DbColumns, StoragePlatformDbSettings
from bot.errors import DatabaseOperationFailed

DEFAULT_PG = "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5432;Database=test;Uid=postgres;"

MASTER_GUID = "a40b132e-b8b1-4316-b1f2-c27d301ad2e5"
SLAVE_GUID = "5d0c9b1e-2f3a-4c5d-8e9f-0a1b2c3d4e5f"
SS_GUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
MS_GUID = "11112222-3333-4444-5555-666677778888"
OLD_IP = "10.2.0.10"
NEW_IP = "10.1.0.10"


def _pg_connection_string() -> str:
    """ODBC connection string for the local PostgreSQL, derived from FAILOVER_TEST_PG_URL when that is set."""
    url = os.environ.get("FAILOVER_TEST_PG_URL")
    if not url:
        return DEFAULT_PG
    parts = urlsplit(url)
    cs = (
        f"Driver={{PostgreSQL Unicode}};Server={parts.hostname or '127.0.0.1'};Port={parts.port or 5432};"
        f"Database={parts.path.lstrip('/') or 'test'};Uid={unquote(parts.username or 'postgres')};"
    )
    if parts.password:
        cs += f"Pwd={{{unquote(parts.password)}}};"
    return cs


def _pg_or_skip() -> str:
    cs = _pg_connection_string()
    try:
        pyodbc.connect(cs, autocommit=True, timeout=5).close()
    except pyodbc.Error as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but PostgreSQL is unreachable through ODBC: {exc.args[-1]}")
        pytest.skip(f"PostgreSQL unreachable through ODBC: {exc.args[-1]}")
    return cs


@dataclass
class Platform:
    """One StoragePlatform database with a BackupServer table, and a separate connection to look at it."""

    connection_string: str
    settings: StoragePlatformDbSettings
    qualified: str  # the table as SQL, quoted

    def run(self, sql: str, *params: Any) -> None:
        conn = pyodbc.connect(self.connection_string, autocommit=False, timeout=5)
        try:
            conn.cursor().execute(sql.replace("{t}", self.qualified), *params)
            conn.commit()
        finally:
            conn.close()

    def rows(self) -> list[tuple[str, str, str, int, str, bool]]:
        """Every row, seen through a fresh connection, OnLine normalised, ordered by GUID."""
        conn = pyodbc.connect(self.connection_string, autocommit=True, timeout=5)
        try:
            cur = conn.cursor()
            cur.execute(f'SELECT "ServerGUID", "Name", "IP", "Port", "Role", "OnLine" FROM {self.qualified}')
            out = [(str(r[0]), str(r[1]), str(r[2]), int(r[3]), str(r[4]), online_flag(r[5])) for r in cur.fetchall()]
        finally:
            conn.close()
        return sorted(out)

    def db(self, **settings: Any) -> StoragePlatformDb:
        merged = self.settings.model_copy(update=settings) if settings else self.settings
        return StoragePlatformDb(merged, self.connection_string, timeout_s=5)


def _fill(platform: Platform, *, slave_online: Any) -> None:
    insert = 'INSERT INTO {t} ("ServerGUID", "Name", "IP", "Port", "Role", "OnLine") VALUES (?, ?, ?, ?, ?, ?)'
    on = True if slave_online is True else 1
    platform.run(insert, MASTER_GUID, "as-a", "10.1.0.11", 443, "MasterAccountServer", on)
    platform.run(insert, SLAVE_GUID, "as-b", OLD_IP, 443, "SlaveAccountServer", slave_online)
    platform.run(insert, SS_GUID, "ss-a1", "10.1.0.20", 8443, "StorageServer", on)
    platform.run(insert, MS_GUID, "ms-b1", "10.2.0.20", 8443, "MirrorServer", on)


@pytest.fixture(params=["sqlite", "postgres-integer", "postgres-boolean"])
def platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    """A healthy platform before failback: the Slave AccountServer row holds the Slave's own GUID, offline."""
    if request.param == "sqlite":
        cs = f"Driver=SQLite3;Database={tmp_path / 'StoragePlatform.db'}"
        p = Platform(cs, StoragePlatformDbSettings(), '"BackupServer"')
        p.run(
            'CREATE TABLE "BackupServer" ("ServerGUID" TEXT PRIMARY KEY, "Name" TEXT, "IP" TEXT, "Port" INTEGER,'
            ' "Role" TEXT, "OnLine" INTEGER)'
        )
        _fill(p, slave_online=0)
        yield p
        return
    cs = _pg_or_skip()
    schema = f"fb_spdb_{secrets.token_hex(6)}"
    online_type = "boolean" if request.param == "postgres-boolean" else "integer"
    p = Platform(cs, StoragePlatformDbSettings(table=f"{schema}.BackupServer"), f'"{schema}"."BackupServer"')
    p.run(f'CREATE SCHEMA "{schema}"')
    try:
        p.run(
            'CREATE TABLE {t} ("ServerGUID" varchar(64) PRIMARY KEY, "Name" varchar(64), "IP" varchar(64),'
            f' "Port" integer, "Role" varchar(64), "OnLine" {online_type})'
        )
        _fill(p, slave_online=False if online_type == "boolean" else 0)
        yield p
    finally:
        p.run(f'DROP SCHEMA "{schema}" CASCADE')


def _make_slave_the_demoted_master(p: Platform, guid: str = MASTER_GUID) -> None:
    """After failover: the old Master's row was re-registered as the Slave AccountServer (KB line 33's if)."""
    p.run('DELETE FROM {t} WHERE "Role" = ?', "SlaveAccountServer")
    p.run(
        'UPDATE {t} SET "Role" = ?, "IP" = ?, "OnLine" = ? WHERE "ServerGUID" = ?',
        "SlaveAccountServer",
        OLD_IP,
        0,
        guid,
    )


def _expected_after(before: list[tuple[str, str, str, int, str, bool]]) -> list[tuple[str, str, str, int, str, bool]]:
    return sorted(
        (g, n, NEW_IP, port, role, True) if role == "SlaveAccountServer" else (g, n, ip, port, role, on)
        for g, n, ip, port, role, on in before
    )


# --------------------------------------------------------------------------- B4: the update


def test_matching_guid_updates_exactly_the_slave_row(platform: Platform) -> None:
    _make_slave_the_demoted_master(platform)
    before = platform.rows()

    outcome = platform.db().point_slave_row_at(MASTER_GUID, NEW_IP)

    assert outcome.matched and outcome.changed
    assert outcome.before.ip == OLD_IP and outcome.before.online is False
    assert outcome.after is not None and outcome.after.ip == NEW_IP and outcome.after.online is True
    assert same_guid(outcome.after.guid, MASTER_GUID)
    assert platform.rows() == _expected_after(before)


@pytest.mark.parametrize("spelling", ["{" + MASTER_GUID.upper() + "}", MASTER_GUID.upper(), " {" + MASTER_GUID + "} "])
def test_guid_with_braces_or_upper_case_matches(platform: Platform, spelling: str) -> None:
    _make_slave_the_demoted_master(platform)
    before = platform.rows()

    outcome = platform.db().point_slave_row_at(spelling, NEW_IP)

    assert outcome.matched and outcome.changed
    assert platform.rows() == _expected_after(before)


def test_stored_guid_with_braces_and_upper_case_matches(platform: Platform) -> None:
    stored = "{" + MASTER_GUID.upper() + "}"
    platform.run('UPDATE {t} SET "ServerGUID" = ? WHERE "ServerGUID" = ?', stored, MASTER_GUID)
    _make_slave_the_demoted_master(platform, stored)

    outcome = platform.db().point_slave_row_at(MASTER_GUID, NEW_IP)

    assert outcome.matched and outcome.changed
    slave = [r for r in platform.rows() if r[4] == "SlaveAccountServer"]
    assert slave == [(stored, "as-a", NEW_IP, 443, "SlaveAccountServer", True)]


def test_guid_mismatch_changes_nothing(platform: Platform) -> None:
    before = platform.rows()  # the Slave row still holds the Slave's own GUID

    outcome = platform.db().point_slave_row_at(MASTER_GUID, NEW_IP)

    assert outcome.matched is False and outcome.changed is False and outcome.after is None
    assert outcome.before.guid == SLAVE_GUID and outcome.before.role == "SlaveAccountServer"
    assert platform.rows() == before
    assert platform.db().slave_row_points_at(MASTER_GUID, NEW_IP) is False


def test_second_call_is_idempotent_and_the_probe_sees_it(platform: Platform) -> None:
    _make_slave_the_demoted_master(platform)
    db = platform.db()
    assert db.slave_row_points_at(MASTER_GUID, NEW_IP) is False

    first = db.point_slave_row_at(MASTER_GUID, NEW_IP)
    after_first = platform.rows()
    second = db.point_slave_row_at("{" + MASTER_GUID.upper() + "}", NEW_IP)

    assert first.changed and not second.changed
    assert second.matched and second.after == second.before
    assert second.before.ip == NEW_IP and second.before.online is True
    assert platform.rows() == after_first
    assert db.slave_row_points_at(MASTER_GUID, NEW_IP) is True
    assert db.slave_row_points_at(MASTER_GUID, "10.9.9.9") is False


def test_online_false_with_right_ip_is_still_updated(platform: Platform) -> None:
    _make_slave_the_demoted_master(platform)
    platform.run('UPDATE {t} SET "IP" = ? WHERE "Role" = ?', NEW_IP, "SlaveAccountServer")

    outcome = platform.db().point_slave_row_at(MASTER_GUID, NEW_IP)

    assert outcome.changed and outcome.after is not None and outcome.after.online is True


def test_no_slave_row_is_an_error_and_changes_nothing(platform: Platform) -> None:
    platform.run('DELETE FROM {t} WHERE "Role" = ?', "SlaveAccountServer")
    before = platform.rows()

    with pytest.raises(DatabaseOperationFailed, match="no row has Role = 'SlaveAccountServer'"):
        platform.db().point_slave_row_at(MASTER_GUID, NEW_IP)
    with pytest.raises(DatabaseOperationFailed, match="exactly one Slave AccountServer row"):
        platform.db().slave_account_server_row()
    assert platform.rows() == before


def test_two_slave_rows_are_an_error_and_change_nothing(platform: Platform) -> None:
    _make_slave_the_demoted_master(platform)
    platform.run('UPDATE {t} SET "Role" = ? WHERE "ServerGUID" = ?', "SlaveAccountServer", MS_GUID)
    before = platform.rows()

    with pytest.raises(DatabaseOperationFailed, match="2 rows have Role = 'SlaveAccountServer'"):
        platform.db().point_slave_row_at(MASTER_GUID, NEW_IP)
    assert platform.rows() == before


def test_missing_configured_column_fails_before_anything_is_written(platform: Platform) -> None:
    _make_slave_the_demoted_master(platform)
    before = platform.rows()
    db = platform.db(columns=DbColumns(online="IsOnline"))

    with pytest.raises(DatabaseOperationFailed, match=r"column IsOnline not found in .*BackupServer \(has: .*OnLine"):
        db.point_slave_row_at(MASTER_GUID, NEW_IP)
    assert platform.rows() == before

    report = db.check_schema()
    assert report.table_found and not report.ok
    assert report.missing == ("IsOnline",)
    assert "column IsOnline not found" in report.problems()[0]


def test_missing_table_is_named(platform: Platform) -> None:
    table = platform.settings.table.replace("BackupServer", "BackupServers")
    db = platform.db(table=table)

    with pytest.raises(DatabaseOperationFailed, match=f"table {table} not found"):
        db.slave_account_server_row()
    report = db.check_schema()
    assert not report.table_found and report.problems() == [f"table {table} not found"]


def test_identifiers_match_case_insensitively(platform: Platform) -> None:
    _make_slave_the_demoted_master(platform)
    before = platform.rows()
    db = platform.db(
        table=platform.settings.table.replace("BackupServer", "backupserver"),
        columns=DbColumns(guid="serverguid", ip="ip", online="ONLINE", role="role"),
    )

    assert db.check_schema().ok
    outcome = db.point_slave_row_at(MASTER_GUID, NEW_IP)

    assert outcome.changed
    assert platform.rows() == _expected_after(before)


def test_check_schema_reports_a_healthy_table(platform: Platform) -> None:
    report = platform.db().check_schema()

    assert report.ok and report.problems() == []
    assert report.found_as is not None and report.found_as.endswith("BackupServer")
    assert set(report.columns) == {"ServerGUID", "Name", "IP", "Port", "Role", "OnLine"}
    assert report.slave_rows == 1
    assert report.online_type in {"integer", "int4", "bool"}
    assert "has the configured columns" in report.summary()


def test_slave_row_reads_normalised(platform: Platform) -> None:
    row = platform.db().slave_account_server_row()

    assert (row.guid, row.ip, row.online, row.role) == (SLAVE_GUID, OLD_IP, False, "SlaveAccountServer")
    assert row.raw["Name"] == "as-b"


def test_unsafe_configured_identifier_is_refused() -> None:
    with pytest.raises(DatabaseOperationFailed, match="not a plain SQL identifier"):
        StoragePlatformDb(StoragePlatformDbSettings(table='BackupServer"; DROP TABLE x; --'), "Driver=SQLite3;")
    with pytest.raises(DatabaseOperationFailed, match="not a plain SQL identifier"):
        StoragePlatformDb(StoragePlatformDbSettings(columns=DbColumns(ip="IP = 1 --")), "Driver=SQLite3;")


def test_empty_connection_string_names_the_variable() -> None:
    with pytest.raises(DatabaseOperationFailed, match="set FAILOVER_ODBC"):
        StoragePlatformDb(StoragePlatformDbSettings(), "  ")


# --------------------------------------------------------------------------- booleans


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),  # SQL Server bit
        (False, False),
        ("1", True),  # psqlODBC boolean (BoolsAsChar)
        ("0", False),
        (1, True),  # SQLite integer
        (0, False),
        ("t", True),  # PostgreSQL text form
        ("f", False),
        ("True", True),
        ("false", False),
        (" 1 ", True),
        ("-1", True),  # psqlODBC TrueIsMinus1
        (Decimal(1), True),
        (Decimal(0), False),
        (b"\x01", True),
        (b"\x00", False),
        (None, False),  # NULL: not online
    ],
)
def test_online_flag_normalisation(value: object, expected: bool) -> None:
    assert online_flag(value) is expected


@pytest.mark.parametrize("value", ["maybe", "2x", 1.5, b"\x01\x00"])
def test_online_flag_refuses_what_it_does_not_understand(value: object) -> None:
    with pytest.raises(DatabaseOperationFailed, match="not a boolean"):
        online_flag(value)


def test_postgres_boolean_read_without_bools_as_char(tmp_path: Path) -> None:
    cs = _pg_or_skip() + "BoolsAsChar=0;"
    schema = f"fb_spdb_{secrets.token_hex(6)}"
    p = Platform(cs, StoragePlatformDbSettings(table=f"{schema}.BackupServer"), f'"{schema}"."BackupServer"')
    p.run(f'CREATE SCHEMA "{schema}"')
    try:
        p.run(
            'CREATE TABLE {t} ("ServerGUID" varchar(64), "Name" varchar(64), "IP" varchar(64), "Port" integer,'
            ' "Role" varchar(64), "OnLine" boolean)'
        )
        p.run("INSERT INTO {t} VALUES (?, ?, ?, ?, ?, ?)", MASTER_GUID, "as-a", OLD_IP, 443, "SlaveAccountServer", True)
        db = p.db()
        assert db.slave_account_server_row().online is True
        assert db.point_slave_row_at(MASTER_GUID, NEW_IP).changed
        assert db.slave_row_points_at(MASTER_GUID, NEW_IP)
    finally:
        p.run(f'DROP SCHEMA "{schema}" CASCADE')


def test_sqlite_text_booleans_read(tmp_path: Path) -> None:
    cs = f"Driver=SQLite3;Database={tmp_path / 'sp.db'}"
    p = Platform(cs, StoragePlatformDbSettings(), '"BackupServer"')
    p.run(
        'CREATE TABLE "BackupServer" ("ServerGUID" TEXT, "Name" TEXT, "IP" TEXT, "Port" INTEGER, "Role" TEXT, "OnLine")'
    )
    p.run("INSERT INTO {t} VALUES (?, ?, ?, ?, ?, ?)", MASTER_GUID, "as-a", NEW_IP, 443, "SlaveAccountServer", "t")
    assert p.db().slave_account_server_row().online is True
    assert p.db().point_slave_row_at(MASTER_GUID, NEW_IP).changed is False
    p.run('UPDATE {t} SET "OnLine" = ?', "f")
    assert p.db().slave_account_server_row().online is False


# --------------------------------------------------------------------------- secrets and previews


def _closed_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _error_texts(exc: BaseException) -> str:
    texts = []
    while exc is not None:
        texts += [str(exc), repr(exc)]
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return "\n".join(texts)


@pytest.mark.parametrize(
    "driver",
    [
        "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port={port};Database=test;Uid=postgres;PWD={pwd};",
        "Driver={No Such Driver 17};Server=127.0.0.1,{port};Uid=sa;PWD={pwd};",
        "Driver=SQLite3;Database=/nonexistent-{port}/dir/StoragePlatform.db;PWD={pwd};",
    ],
)
def test_connection_string_never_appears_in_errors(driver: str) -> None:
    password = f"NotTheRealPassword-{uuid.uuid4().hex}"
    cs = driver.replace("{port}", str(_closed_loopback_port())).replace("{pwd}", password)
    db = StoragePlatformDb(StoragePlatformDbSettings(), cs, timeout_s=3)

    for call in (db.check_schema, db.slave_account_server_row, lambda: db.point_slave_row_at(MASTER_GUID, NEW_IP)):
        with pytest.raises(DatabaseOperationFailed, match="cannot connect to the StoragePlatform database: ") as info:
            call()
        texts = _error_texts(info.value)
        assert isinstance(info.value.__cause__, pyodbc.Error)
        assert password not in texts and cs not in texts
    assert password not in repr(db)


def test_row_preview_masks_guids_and_marks_changes() -> None:
    before = BackupServerRow("{" + MASTER_GUID + "}", OLD_IP, False, "SlaveAccountServer", {})
    after = BackupServerRow(MASTER_GUID, NEW_IP, True, "SlaveAccountServer", {})

    text = row_preview(before, after)

    assert MASTER_GUID not in text and MASTER_GUID[:8] not in text  # never the OTP
    masked = "********-****-****-****-c27d301ad2e5"  # the one form the bot shows a GUID in (actions.guid)
    assert mask_guid(MASTER_GUID) == masked and masked in text
    lines = text.splitlines()
    assert lines[0].split() == ["column", "before", "after"]
    assert lines[1].split() == ["ServerGUID", masked, masked]
    assert lines[2].split() == ["IP", "*", OLD_IP, NEW_IP]
    assert lines[3].split() == ["OnLine", "*", "false", "true"]
    assert row_preview(before, None).splitlines()[0].split() == ["column", "before"]


def test_update_touching_two_rows_is_rolled_back() -> None:
    """A view whose update rule also rewrites a row the view hides: the UPDATE reports 2 rows and is undone."""
    cs = _pg_or_skip()
    schema = f"fb_spdb_{secrets.token_hex(6)}"
    p = Platform(cs, StoragePlatformDbSettings(table=f"{schema}.BackupServer"), f'"{schema}"."Base"')
    p.run(f'CREATE SCHEMA "{schema}"')
    try:
        p.run(
            'CREATE TABLE {t} ("ServerGUID" varchar(64), "Name" varchar(64), "IP" varchar(64), "Port" integer,'
            ' "Role" varchar(64), "OnLine" integer)'
        )
        insert = "INSERT INTO {t} VALUES (?, ?, ?, ?, ?, ?)"
        p.run(insert, MASTER_GUID, "as-a", OLD_IP, 443, "SlaveAccountServer", 0)
        p.run(insert, MASTER_GUID, "ghost", "10.9.9.9", 443, "SlaveAccountServer", 0)
        p.run(f'CREATE VIEW "{schema}"."BackupServer" AS SELECT * FROM {{t}} WHERE "Name" <> \'ghost\'')
        p.run(
            f'CREATE RULE spread AS ON UPDATE TO "{schema}"."BackupServer" DO INSTEAD'
            ' UPDATE {t} SET "IP" = NEW."IP", "OnLine" = NEW."OnLine" WHERE {t}."Role" = OLD."Role"'
        )
        before = p.rows()

        with pytest.raises(DatabaseOperationFailed, match="would touch 2 rows, not exactly one; rolled back"):
            p.db().point_slave_row_at(MASTER_GUID, NEW_IP)
        assert p.rows() == before
    finally:
        p.run(f'DROP SCHEMA "{schema}" CASCADE')
