"""mask the ServerGuids kept in runs.facts: a masked GUID and its hash, never the GUID (its first eight
characters are a one-time password)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import hashlib
import json
import re

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_GUID = re.compile(r"\{?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}?")


def _at_rest(value: str) -> dict[str, str] | str:
    m = _GUID.fullmatch(value.strip())
    if not m:
        return "********"  # not a GUID after all: keep nothing of it
    guid = m.group(1).lower()
    return {
        "masked": "********-****-****-****-" + guid[-12:],
        "sha256": hashlib.sha256(guid.encode("ascii")).hexdigest(),
    }


def upgrade() -> None:
    runs = sa.table("runs", sa.column("id", sa.String), sa.column("facts", sa.Text))
    conn = op.get_bind()
    for run_id, raw in conn.execute(sa.select(runs.c.id, runs.c.facts)).all():
        try:
            facts = json.loads(raw or "{}")
        except ValueError:
            continue
        changed = False
        for key, value in list(facts.items()):
            if key.startswith("guid:") and isinstance(value, str):
                facts[key] = _at_rest(value)
                changed = True
        if changed:
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(facts=json.dumps(facts, sort_keys=True)))


def downgrade() -> None:
    pass  # the GUIDs are gone on purpose
