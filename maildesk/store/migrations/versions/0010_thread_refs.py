"""thread_refs: the Message-IDs a ticket's mail answered, so that the mail they name finds
the ticket when it arrives after its reply

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'thread_refs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('ticket_id', sa.Integer(), nullable=False),
        sa.Column('ref', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_thread_refs_ref', 'thread_refs', ['ref'])


def downgrade() -> None:
    op.drop_index('ix_thread_refs_ref', 'thread_refs')
    op.drop_table('thread_refs')
