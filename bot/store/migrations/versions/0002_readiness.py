"""readiness rounds, their results and the open problems

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "readiness_rounds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("runner", sa.String(length=100), nullable=False),
        sa.Column("problems", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("readiness_rounds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_readiness_rounds_started_at"), ["started_at"], unique=False)
    op.create_table(
        "readiness_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=100), nullable=False),
        sa.Column("check", sa.String(length=100), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["round_id"], ["readiness_rounds.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("readiness_results", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_readiness_results_round_id"), ["round_id"], unique=False)
    op.create_table(
        "readiness_problems",
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("host", sa.String(length=100), nullable=False),
        sa.Column("check", sa.String(length=100), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("announced_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("readiness_problems")
    with op.batch_alter_table("readiness_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_readiness_results_round_id"))
    op.drop_table("readiness_results")
    with op.batch_alter_table("readiness_rounds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_readiness_rounds_started_at"))
    op.drop_table("readiness_rounds")
