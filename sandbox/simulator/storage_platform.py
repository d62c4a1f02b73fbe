"""The simulated StoragePlatform databases: DIR/StoragePlatform.<site>.db (or one DIR/StoragePlatform.db)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.config import Config, StoragePlatformDbSettings

DATABASE_FILE = "StoragePlatform.db"
MASTER_ROLE = "MasterAccountServer"
STORAGE_ROLE = "StorageServer"
MIRROR_ROLE = "MirrorServer"


def normalise_guid(guid: str) -> str:
    """GUIDs compare case-insensitively with braces removed."""
    return guid.strip().strip("{}").lower()


@dataclass(frozen=True)
class BackupServerRow:
    guid: str
    name: str
    ip: str
    port: int
    role: str
    online: bool


class StoragePlatformDatabase:
    """BackupServer rows, with the configured table and column names (Name and Port are fixed)."""

    def __init__(self, state_dir: Path, settings: StoragePlatformDbSettings, file_name: str = DATABASE_FILE) -> None:
        self.path = (state_dir / file_name).resolve()
        self.settings = settings
        cols = settings.columns
        self._table = _quote(settings.table)
        self._guid, self._ip, self._role, self._online = (
            _quote(c) for c in (cols.guid, cols.ip, cols.role, cols.online)
        )

    @property
    def slave_role(self) -> str:
        return self.settings.slave_account_server_role

    def odbc_connection_string(self) -> str:
        return f"Driver=SQLite3;Database={self.path}"

    def _connect(self) -> sqlite3.Connection:
        # The bot writes through ODBC at the same time: wait for its lock rather than fail.
        return sqlite3.connect(self.path, timeout=10)

    def ensure_table(self) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} ("
                f'{self._guid} TEXT NOT NULL, "Name" TEXT NOT NULL, {self._ip} TEXT NOT NULL, '
                f'"Port" INTEGER NOT NULL, {self._role} TEXT NOT NULL, {self._online} INTEGER NOT NULL)'
            )

    def rows(self) -> list[BackupServerRow]:
        with closing(self._connect()) as db:
            cur = db.execute(
                f'SELECT {self._guid}, "Name", {self._ip}, "Port", {self._role}, {self._online} FROM {self._table}'
            )
            return [BackupServerRow(str(g), str(n), str(i), int(p), str(r), bool(o)) for g, n, i, p, r, o in cur]

    def add_if_missing(self, row: BackupServerRow) -> bool:
        """Insert ``row`` unless a row with its GUID or name exists; True if inserted."""
        with closing(self._connect()) as db, db:
            for guid, name in db.execute(f'SELECT {self._guid}, "Name" FROM {self._table}'):
                if name == row.name or normalise_guid(str(guid)) == normalise_guid(row.guid):
                    return False
            db.execute(
                f'INSERT INTO {self._table} ({self._guid}, "Name", {self._ip}, "Port", {self._role}, {self._online}) '
                "VALUES (?, ?, ?, ?, ?, ?)",
                (row.guid, row.name, row.ip, row.port, row.role, int(row.online)),
            )
            return True

    def promote_account_server(self, guid: str) -> bool:
        """The Slave row with ``guid`` becomes the online Master; the Master row becomes an offline Slave.

        True when rows changed; False when ``guid``'s row is not the Slave AccountServer's.
        """
        with closing(self._connect()) as db, db:
            db.execute("BEGIN IMMEDIATE")
            found: list[tuple[Any, str]] = [
                (rowid, str(role))
                for rowid, g, role in db.execute(f"SELECT rowid, {self._guid}, {self._role} FROM {self._table}")
                if normalise_guid(str(g)) == normalise_guid(guid)
            ]
            if len(found) != 1 or found[0][1] != self.slave_role:
                return False
            db.execute(
                f"UPDATE {self._table} SET {self._role} = ?, {self._online} = 0 WHERE {self._role} = ?",
                (self.slave_role, MASTER_ROLE),
            )
            db.execute(
                f"UPDATE {self._table} SET {self._role} = ?, {self._online} = 1 WHERE rowid = ?",
                (MASTER_ROLE, found[0][0]),
            )
            return True

    def replace_rows_with(self, source: StoragePlatformDatabase) -> bool:
        """This database becomes a copy of ``source``'s BackupServer table (a Slave's replica); True if
        that changed anything."""
        rows = source.rows()
        if sorted(rows, key=repr) == sorted(self.rows(), key=repr):
            return False
        with closing(self._connect()) as db, db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(f"DELETE FROM {self._table}")
            db.executemany(
                f'INSERT INTO {self._table} ({self._guid}, "Name", {self._ip}, "Port", {self._role}, {self._online}) '
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(r.guid, r.name, r.ip, r.port, r.role, int(r.online)) for r in rows],
            )
        return True


def site_databases(config: Config, state_dir: Path) -> dict[str, StoragePlatformDatabase]:
    """Each site's database (spec v3): ``StoragePlatform.<site>.db`` per site, or one shared
    ``StoragePlatform.db`` when every site names the same connection-string variable."""
    shared = len(config.odbc_envs()) == 1
    out: dict[str, StoragePlatformDatabase] = {}
    by_env: dict[str, StoragePlatformDatabase] = {}
    for name, site in config.sites.items():
        env = site.db.odbc_env
        if env not in by_env:
            file_name = DATABASE_FILE if shared else f"StoragePlatform.{name}.db"
            by_env[env] = StoragePlatformDatabase(state_dir, site.db, file_name)
        out[name] = by_env[env]
    return out


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
