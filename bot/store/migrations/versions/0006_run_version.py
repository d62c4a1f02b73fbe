"""runs.version: bumped by the database on every change to a run, its steps or its votes (the snapshot cache's key)

Revision ID: 0006
Revises: 0005

Triggers rather than application code keep the version honest for every writer: the bot's processes and
replicas, and a person fixing a row by hand. The bot also bumps it first thing in each of its own write
transactions (bot/runs/reads.py), so that on PostgreSQL every writer of a run takes the run's row lock
first and in the same order.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

CHILDREN = ("step_runs", "approvals")

PG_FUNCTION = """
CREATE OR REPLACE FUNCTION failover_bump_run_version() RETURNS trigger AS $$
BEGIN
    IF TG_TABLE_NAME = 'runs' THEN
        IF NEW.version = OLD.version THEN
            NEW.version := OLD.version + 1;
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' THEN
        UPDATE runs SET version = version + 1 WHERE id = OLD.run_id;
    ELSE
        UPDATE runs SET version = version + 1 WHERE id = NEW.run_id;
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="0"))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER runs_version BEFORE UPDATE ON runs "
            "FOR EACH ROW EXECUTE FUNCTION failover_bump_run_version()"
        )
        for table in CHILDREN:
            op.execute(
                f"CREATE TRIGGER {table}_version AFTER INSERT OR UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION failover_bump_run_version()"
            )
        return
    op.execute(
        "CREATE TRIGGER runs_version AFTER UPDATE ON runs WHEN NEW.version = OLD.version "
        "BEGIN UPDATE runs SET version = OLD.version + 1 WHERE id = NEW.id; END"
    )
    for table in CHILDREN:
        for when, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
            op.execute(
                f"CREATE TRIGGER {table}_version_{when.lower()} AFTER {when} ON {table} "
                f"BEGIN UPDATE runs SET version = version + 1 WHERE id = {row}.run_id; END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS runs_version ON runs")
        for table in CHILDREN:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_version ON {table}")
        op.execute("DROP FUNCTION IF EXISTS failover_bump_run_version()")
    else:
        op.execute("DROP TRIGGER IF EXISTS runs_version")
        for table in CHILDREN:
            for when in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_version_{when}")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("version")
