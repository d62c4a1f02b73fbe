"""drop APScheduler's pickled job table: reminders are rebuilt from run state, never unpickled

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The table was created by APScheduler's SQLAlchemyJobStore, outside these migrations; its rows are
    # pickles, and loading one runs whatever it names. Nothing reads it any more: drop it.
    op.execute("DROP TABLE IF EXISTS apscheduler_jobs")


def downgrade() -> None:
    pass  # nothing to restore: the jobs are rebuilt from run state
