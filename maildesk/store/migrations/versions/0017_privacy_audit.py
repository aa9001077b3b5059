"""retention and privacy (issue 21): privacy_audit, a line per requester export, erase and
retention run: who ran it (the OS user), when, what it did and how much; an erased
requester is named by their pseudonym, never by their address

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'privacy_audit',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('actor', sa.Text(), nullable=False),
        sa.Column('action', sa.String(length=20), nullable=False),
        sa.Column('subject', sa.String(length=100), nullable=True),
        sa.Column('counts', sa.JSON(), nullable=False),
        sa.Column('detail', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_privacy_audit_at', 'privacy_audit', ['at'])


def downgrade() -> None:
    op.drop_table('privacy_audit')
