"""The BackupServer table's rows as the bot reads them: normalised values, the schema report for preflight, and
the before/after preview of the Slave AccountServer row (GUIDs masked)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from actions.errors import DatabaseOperationFailed
from actions.guid import mask_guid

_TRUE_TEXT = frozenset({"1", "-1", "t", "true", "y", "yes", "on"})
_FALSE_TEXT = frozenset({"0", "f", "false", "n", "no", "off", ""})


@dataclass(frozen=True)
class BackupServerRow:
    """One row of the BackupServer table, its four known columns normalised, every column kept in ``raw``."""

    guid: str
    ip: str
    online: bool
    role: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class UpdateOutcome:
    """What ``point_slave_row_at`` found and did: ``matched`` False means nothing was touched (KB line 33's else)."""

    matched: bool
    before: BackupServerRow
    after: BackupServerRow | None
    changed: bool


@dataclass(frozen=True)
class SchemaReport:
    """Read-only findings about the configured table and columns, for preflight."""

    table: str
    table_found: bool
    found_as: str | None = None
    columns: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    online_type: str | None = None
    slave_rows: int | None = None
    role: str = ""

    @property
    def ok(self) -> bool:
        return self.table_found and not self.missing

    def problems(self) -> list[str]:
        """Human-readable problems; empty when the table and every configured column exist."""
        if not self.table_found:
            return [f"table {self.table} not found"]
        return [f"column {name} not found in {self.table} (has: {', '.join(self.columns)})" for name in self.missing]

    def summary(self) -> str:
        """One line for the preflight report."""
        if not self.ok:
            return "; ".join(self.problems())
        rows = "" if self.slave_rows is None else f"; {self.slave_rows} row(s) with role {self.role}"
        return f"table {self.found_as} has the configured columns (OnLine type {self.online_type or 'unknown'}){rows}"


def comparable_guid(value: object) -> str:
    """A GUID for comparison: text, trimmed, braces removed, lower case."""
    text = "" if value is None else str(value).strip()
    return text.removeprefix("{").removesuffix("}").strip().lower()


def same_guid(a: object, b: object) -> bool:
    """GUIDs compared case-insensitively with braces removed (empty never matches)."""
    na, nb = comparable_guid(a), comparable_guid(b)
    return bool(na) and na == nb


def online_flag(value: object) -> bool:
    """An OnLine value as any driver returns it (bit True/False, psqlODBC '1'/'0', SQLite 0/1, 't'/'f') as a bool."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | Decimal):
        return value != 0
    if isinstance(value, bytes | bytearray) and len(value) == 1:
        return value[0] != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE_TEXT:
            return True
        if text in _FALSE_TEXT:
            return False
    raise DatabaseOperationFailed(f"OnLine value {value!r} is not a boolean this bot understands")


def row_preview(before: BackupServerRow, after: BackupServerRow | None) -> str:
    """A small text table of the Slave AccountServer row before and after, GUIDs masked, changed values starred."""
    labels = ("ServerGUID", "IP", "OnLine", "Role")

    def cells(row: BackupServerRow) -> tuple[str, ...]:
        return (mask_guid(row.guid), row.ip, "true" if row.online else "false", row.role)

    old = cells(before)
    lines: list[tuple[str, ...]] = [("column", "before") + (("after",) if after is not None else ())]
    new = cells(after) if after is not None else None
    for i, label in enumerate(labels):
        if new is None:
            lines.append((label, old[i]))
        else:
            lines.append((label if old[i] == new[i] else f"{label} *", old[i], new[i]))
    widths = [max(len(line[c]) for line in lines) for c in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(widths[c]) for c, cell in enumerate(line)).rstrip() for line in lines)
