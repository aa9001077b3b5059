"""finding recurring incidents and triage (issue 20): problem_proposals, the clusters of
similar incidents put to a queue's group lead and what came of each; triage_models, the
category, queue and type models trained on the desk's own tickets, newest in use

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'problem_proposals',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('proposed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('queue', sa.String(length=64), nullable=False),
        sa.Column('lead', sa.Text(), nullable=True),
        sa.Column('tickets', sa.JSON(), nullable=False),
        sa.Column('words', sa.JSON(), nullable=False),
        sa.Column('problem', sa.String(length=32), nullable=True),
        sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_problem_proposals_proposed', 'problem_proposals', ['proposed_at'])
    op.create_table(
        'triage_models',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('trained_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('tickets', sa.Integer(), nullable=False),
        sa.Column('summary', sa.JSON(), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )


def downgrade() -> None:
    op.drop_table('triage_models')
    op.drop_table('problem_proposals')
