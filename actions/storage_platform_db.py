"""The StoragePlatform database's BackupServer table over ODBC: its shape, and the Slave AccountServer row."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import pyodbc

from actions.backup_server import BackupServerRow, SchemaReport, UpdateOutcome, comparable_guid, online_flag, same_guid
from actions.connection_strings import DbIdentity, db_identity, mask_connection_string
from actions.errors import DatabaseOperationFailed, SlaveRowCount
from actions.hosts import Site, StoragePlatformDbSettings

DEFAULT_TIMEOUT_S = 15.0

# A configured table or column name must look like a plain SQL identifier before it is ever quoted into SQL.
_PLAIN_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$#@ -]{0,127}$")
_BOOLEAN_TYPES = frozenset({"bit", "bool", "boolean"})
_COLUMN_KEYS = ("guid", "ip", "online", "role")


# --------------------------------------------------------------------------- the table as found


def _plain(name: str, what: str) -> str:
    if not _PLAIN_IDENTIFIER.match(name):
        raise DatabaseOperationFailed(f"{what} {name!r} is not a plain SQL identifier (letters, digits, _ $ # @ -)")
    return name


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class _Table:
    """The configured table as the database spells it, with its columns (actual names) and their type names."""

    schema: str | None
    name: str
    types: Mapping[str, str]  # actual column name -> lower-case type name ('' when unknown)

    @property
    def sql(self) -> str:
        return (f"{_quote(self.schema)}." if self.schema else "") + _quote(self.name)

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    def column(self, configured: str) -> str | None:
        """The actual name of a configured column, matched case-insensitively (exact case preferred)."""
        if configured in self.types:
            return configured
        hits = [c for c in self.types if c.lower() == configured.lower()]
        return hits[0] if len(hits) == 1 else None


@dataclass(frozen=True)
class _Columns:
    guid: str
    ip: str
    online: str
    role: str
    online_is_boolean: bool


# --------------------------------------------------------------------------- the database


class StoragePlatformDb:
    """The StoragePlatform database of the current Master AccountServer, reached through pyodbc.

    Every public call opens its own connection (autocommit off) and closes it before returning.
    """

    def __init__(
        self, settings: StoragePlatformDbSettings, connection_string: str, *, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        if not connection_string.strip():
            raise DatabaseOperationFailed(
                f"no ODBC connection string for the StoragePlatform database (set {settings.odbc_env})"
            )
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.settings = settings
        self._connection_string = connection_string
        self.timeout_s = timeout_s
        table = settings.table
        schema, dot, name = table.rpartition(".")
        self._schema = _plain(schema, "configured schema") if dot else None
        self._table = _plain(name, "configured table")
        for key in _COLUMN_KEYS:
            _plain(getattr(settings.columns, key), "configured column")

    @classmethod
    def of_site(cls, site: Site, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> StoragePlatformDb:
        """The database of ``site``'s AccountServer, with the connection string the configuration resolved."""
        return cls(site.db, site.odbc_connection_string, timeout_s=timeout_s)

    def __repr__(self) -> str:
        return f"StoragePlatformDb(table={self.settings.table!r}, connection_string='***')"

    def identity(self) -> DbIdentity:
        """The server and database this connection string names (names only, never the password)."""
        return db_identity(self._connection_string)

    # ----------------------------------------------------------------- public operations

    def check_schema(self) -> SchemaReport:
        """Read-only: does the configured table exist, with every configured column, and how many slave rows."""
        configured = self.settings.table
        with self._connection("cannot check the StoragePlatform database schema") as conn:
            cur = conn.cursor()
            table = self._find_table(conn, cur)
            if table is None:
                return SchemaReport(table=configured, table_found=False, role=self.settings.slave_account_server_role)
            missing = tuple(
                name for name in (getattr(self.settings.columns, k) for k in _COLUMN_KEYS) if table.column(name) is None
            )
            online = table.column(self.settings.columns.online)
            role = table.column(self.settings.columns.role)
            slave_rows: int | None = None
            if role is not None:
                cur.execute(
                    f"SELECT COUNT(*) FROM {table.sql} WHERE {_quote(role)} = ?",
                    self.settings.slave_account_server_role,
                )
                slave_rows = int(cur.fetchone()[0])
            conn.rollback()
            return SchemaReport(
                table=configured,
                table_found=True,
                found_as=table.label,
                columns=tuple(table.types),
                missing=missing,
                online_type=(table.types[online] or None) if online else None,
                slave_rows=slave_rows,
                role=self.settings.slave_account_server_role,
            )

    def slave_account_server_row(self) -> BackupServerRow:
        """The one row whose role column is the configured Slave AccountServer role."""
        with self._connection("cannot read the Slave AccountServer row") as conn:
            cur = conn.cursor()
            table, cols = self._require_columns(conn, cur)
            row = self._the_slave_row(cur, table, cols)
            conn.rollback()
            return row

    def slave_row_points_at(self, guid: str, ip: str) -> bool:
        """Read-only probe of B4: the slave row has this GUID, this IP and OnLine true."""
        row = self.slave_account_server_row()
        return same_guid(row.guid, guid) and row.ip == ip.strip() and row.online

    def point_slave_row_at(self, demoted_master_guid: str, new_ip: str) -> UpdateOutcome:
        """KB line 33: if the Slave AccountServer row has the demoted Master's GUID, set its IP and OnLine true.

        One transaction touching exactly one row; a GUID mismatch changes nothing (``matched`` False); a row
        already in place changes nothing (``changed`` False).
        """
        ip = new_ip.strip()
        if not ip or any(ch.isspace() for ch in ip):
            raise DatabaseOperationFailed(f"not an address to write into the IP column: {new_ip!r}")
        if not comparable_guid(demoted_master_guid):
            raise DatabaseOperationFailed("the demoted Master AccountServer's ServerGUID is empty")
        with self._connection("cannot update the Slave AccountServer row") as conn:
            cur = conn.cursor()
            table, cols = self._require_columns(conn, cur)
            before = self._the_slave_row(cur, table, cols)
            if not same_guid(before.guid, demoted_master_guid):
                conn.rollback()
                return UpdateOutcome(matched=False, before=before, after=None, changed=False)
            if before.ip == ip and before.online:
                conn.rollback()
                return UpdateOutcome(matched=True, before=before, after=before, changed=False)
            stored_guid = _pick(before.raw, cols.guid)
            role = self.settings.slave_account_server_role
            cur.execute(
                f"UPDATE {table.sql} SET {_quote(cols.ip)} = ?, {_quote(cols.online)} = ? "
                f"WHERE {_quote(cols.role)} = ? AND {_quote(cols.guid)} = ?",
                ip,
                True if cols.online_is_boolean else 1,
                role,
                stored_guid,
            )
            touched = cur.rowcount
            if touched != 1:
                conn.rollback()
                raise DatabaseOperationFailed(
                    f"the update of {table.label} would touch {touched} rows, not exactly one; rolled back"
                )
            rows = self._select(
                cur, table, cols, f"{_quote(cols.role)} = ? AND {_quote(cols.guid)} = ?", role, stored_guid
            )
            if len(rows) != 1 or rows[0].ip != ip or not rows[0].online:
                conn.rollback()
                raise DatabaseOperationFailed(
                    f"the updated {table.label} row does not read back as IP {ip} and OnLine true; rolled back"
                )
            conn.commit()
            return UpdateOutcome(matched=True, before=before, after=rows[0], changed=True)

    # ----------------------------------------------------------------- connection and errors

    def _message(self, exc: pyodbc.Error) -> str:
        """The driver's message with the connection string and its secrets masked; the exception is masked too."""
        cs = self._connection_string
        exc.args = tuple(mask_connection_string(a, cs) if isinstance(a, str) else a for a in exc.args)
        text = exc.args[-1] if exc.args and isinstance(exc.args[-1], str) else str(exc)
        return " ".join(text.split())

    @contextmanager
    def _connection(self, failing: str) -> Iterator[pyodbc.Connection]:
        try:
            conn = pyodbc.connect(self._connection_string, autocommit=False, timeout=max(1, math.ceil(self.timeout_s)))
        except pyodbc.Error as exc:
            raise DatabaseOperationFailed(
                f"cannot connect to the StoragePlatform database: {self._message(exc)}"
            ) from exc
        try:
            # Per-statement timeout; a driver that refuses SQL_ATTR_QUERY_TIMEOUT still has the login timeout.
            with suppress(pyodbc.Error):
                conn.timeout = max(1, math.ceil(self.timeout_s))
            yield conn
        except pyodbc.Error as exc:
            self._rollback_quietly(conn)
            raise DatabaseOperationFailed(f"{failing}: {self._message(exc)}") from exc
        except BaseException:
            self._rollback_quietly(conn)
            raise
        finally:
            conn.close()

    def _rollback_quietly(self, conn: pyodbc.Connection) -> None:
        try:
            conn.rollback()
        except pyodbc.Error:
            # The connection is already broken; closing it discards the transaction anyway.
            return

    # ----------------------------------------------------------------- schema discovery

    def _catalog(self, cur: pyodbc.Cursor, schema: str | None, name: str) -> dict[tuple[str, str], dict[str, str]]:
        """Columns per (schema, table) from SQLColumns, filtered to exact names (the arguments are LIKE patterns)."""
        found: dict[tuple[str, str], dict[str, str]] = {}
        for r in cur.columns(table=name, schema=schema):
            if r.table_name != name or (schema is not None and (r.table_schem or "") != schema):
                continue
            found.setdefault((r.table_schem or "", r.table_name), {})[r.column_name] = (r.type_name or "").lower()
        return found

    def _find_table(self, conn: pyodbc.Connection, cur: pyodbc.Cursor) -> _Table | None:
        """The configured table as the database spells it (case-insensitively), or None when it does not exist."""
        schema, name = self._schema, self._table
        try:
            found = self._catalog(cur, schema, name)
            if not found:
                # Not under that exact spelling: look for it case-insensitively among all tables and views.
                candidates = {
                    (t.table_schem or "", t.table_name)
                    for t in cur.tables()
                    if (t.table_name or "").lower() == name.lower()
                    and (schema is None or (t.table_schem or "").lower() == schema.lower())
                }
                for cand_schema, cand_name in sorted(candidates):
                    found.update(self._catalog(cur, cand_schema or None, cand_name))
        except pyodbc.Error:
            # The catalog functions may be refused (permissions); fall back to the table itself below.
            found = {}
            self._rollback_quietly(conn)
        if len(found) > 1:
            exact = {k: v for k, v in found.items() if k[1] == name}
            found = exact if len(exact) == 1 else found
        if len(found) > 1:
            where = ", ".join(f"{s}.{t}" if s else t for s, t in sorted(found))
            raise DatabaseOperationFailed(
                f"table {self.settings.table} is ambiguous (found {where}); configure it as schema.table"
            )
        if found:
            (found_schema, found_name), types = next(iter(found.items()))
            return _Table(found_schema or None, found_name, types)
        return self._probe_table(conn, cur)

    def _probe_table(self, conn: pyodbc.Connection, cur: pyodbc.Cursor) -> _Table | None:
        """Fallback without catalog access: SELECT no rows and read the column names from the result."""
        table = _Table(self._schema, self._table, {})
        try:
            cur.execute(f"SELECT * FROM {table.sql} WHERE 1=0")
        except pyodbc.Error:
            self._rollback_quietly(conn)
            return None
        types = {d[0]: ("bit" if d[1] is bool else "") for d in cur.description}
        return _Table(self._schema, self._table, types)

    def _require_columns(self, conn: pyodbc.Connection, cur: pyodbc.Cursor) -> tuple[_Table, _Columns]:
        table = self._find_table(conn, cur)
        if table is None:
            raise DatabaseOperationFailed(f"table {self.settings.table} not found in the StoragePlatform database")
        actual: dict[str, str] = {}
        for key in _COLUMN_KEYS:
            configured = getattr(self.settings.columns, key)
            name = table.column(configured)
            if name is None:
                raise DatabaseOperationFailed(
                    f"column {configured} not found in {table.label} (has: {', '.join(table.types)})"
                )
            actual[key] = _plain(name, "column")
        online_type = table.types[actual["online"]]
        return table, _Columns(**actual, online_is_boolean=online_type in _BOOLEAN_TYPES)

    # ----------------------------------------------------------------- rows

    def _select(
        self, cur: pyodbc.Cursor, table: _Table, cols: _Columns, where: str, *params: Any
    ) -> list[BackupServerRow]:
        cur.execute(f"SELECT * FROM {table.sql} WHERE {where}", *params)
        names = [d[0] for d in cur.description]
        out: list[BackupServerRow] = []
        for values in cur.fetchall():
            raw = dict(zip(names, values, strict=True))
            out.append(_to_row(raw, cols))
        return out

    def _the_slave_row(self, cur: pyodbc.Cursor, table: _Table, cols: _Columns) -> BackupServerRow:
        role = self.settings.slave_account_server_role
        rows = self._select(cur, table, cols, f"{_quote(cols.role)} = ?", role)
        if len(rows) != 1:
            found = "no row has" if not rows else f"{len(rows)} rows have"
            raise SlaveRowCount(
                len(rows),
                f"{found} {cols.role} = {role!r} in {table.label}; exactly one Slave AccountServer row is expected"
                " (nothing was changed)",
            )
        return rows[0]


def _pick(raw: Mapping[str, Any], name: str) -> Any:
    if name in raw:
        return raw[name]
    for key, value in raw.items():
        if key.lower() == name.lower():
            return value
    raise DatabaseOperationFailed(f"column {name} missing from the selected row (has: {', '.join(raw)})")


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _to_row(raw: Mapping[str, Any], cols: _Columns) -> BackupServerRow:
    return BackupServerRow(
        guid=_text(_pick(raw, cols.guid)),
        ip=_text(_pick(raw, cols.ip)),
        online=online_flag(_pick(raw, cols.online)),
        role=_text(_pick(raw, cols.role)),
        raw=dict(raw),
    )
