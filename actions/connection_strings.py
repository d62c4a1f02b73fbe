"""Which database an ODBC / ADO.NET connection string names (server and database, never the password), and a
message with the connection string and its secrets masked."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Connection-string keys whose values are secrets on their own (beyond the whole string).
_SECRET_KEYS = frozenset({"pwd", "password", "accesstoken", "access_token", "token", "secret", "clientsecret"})
_SERVER_KEYS = ("server", "data source", "address", "addr", "network address")
_DATABASE_KEYS = ("database", "initial catalog")
_DEFAULT_SQL_PORT = "1433"


@dataclass(frozen=True)
class DbIdentity:
    """Which database a connection string names: its server and database, normalised for comparison.

    SQL Server: ``Server``/``Data Source`` (``tcp:`` prefix and the default port 1433 dropped, case-insensitive)
    and ``Database``/``Initial Catalog``. A file database (SQLite: ``Database=<path>``) has no server; its
    database is the file path. Names only: never a password.
    """

    server: str
    database: str
    server_shown: str
    database_shown: str

    def shown(self) -> str:
        server = f"server {self.server_shown}" if self.server_shown else "no server (a file database)"
        return f"{server}, database {self.database_shown or '(none named)'}"

    def same_as(self, other: DbIdentity) -> bool:
        return bool(self.database) and (self.server, self.database) == (other.server, other.database)


def _connection_pairs(text: str) -> dict[str, str]:
    """``key=value;`` pairs of an ODBC / ADO.NET connection string; ``{…}`` values may hold ``;``."""
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        eq = text.find("=", i)
        if eq < 0:
            break
        key = text[i:eq].strip().lower()
        j = eq + 1
        while j < n and text[j] == " ":
            j += 1
        if j < n and text[j] == "{":
            end = text.find("}", j + 1)
            while end >= 0 and end + 1 < n and text[end + 1] == "}":
                end = text.find("}", end + 2)
            end = n if end < 0 else end
            value = text[j + 1 : end].replace("}}", "}")
            semi = text.find(";", end)
            i = n if semi < 0 else semi + 1
        else:
            semi = text.find(";", j)
            value = text[j:] if semi < 0 else text[j:semi]
            i = n if semi < 0 else semi + 1
        if key:
            out[key] = value.strip().strip('"').strip("'")
    return out


def _normalise_server(value: str) -> str:
    text = value.strip().lower()
    if text.startswith("tcp:"):
        text = text[4:]
    for sep in (",", ":"):
        host, found, port = text.rpartition(sep)
        if found and port.strip() == _DEFAULT_SQL_PORT:
            text = host
    return text.strip()


def _normalise_database(value: str) -> str:
    text = value.strip()
    if "/" in text or "\\" in text:  # a file database: its path
        text = re.sub(r"[\\/]+", "/", text).rstrip("/")
    return text.lower()


def db_identity(connection_string: str) -> DbIdentity:
    """The server and database a connection string names (see DbIdentity)."""
    pairs = _connection_pairs(connection_string)
    server = next((pairs[k] for k in _SERVER_KEYS if pairs.get(k)), "")
    database = next((pairs[k] for k in _DATABASE_KEYS if pairs.get(k)), "")
    return DbIdentity(_normalise_server(server), _normalise_database(database), server.strip(), database.strip())


def mask_connection_string(text: str, connection_string: str) -> str:
    """``text`` with the connection string, and any password-like value in it, replaced by ***."""
    if connection_string:
        text = text.replace(connection_string, "***")
    for part in connection_string.split(";"):
        key, sep, value = part.partition("=")
        value = value.strip().removeprefix("{").removesuffix("}")
        if sep and key.strip().lower() in _SECRET_KEYS and value:
            text = text.replace(value, "***")
    return text
