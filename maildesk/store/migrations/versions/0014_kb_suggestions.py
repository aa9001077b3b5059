"""the knowledge base (issue 19): kb_suggestions, the articles each acknowledgement
suggested and whether one solved the ticket (a search that found none is a row with no
slug), for the deflection report

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-26
"""
from alembic import op
import sqlalchemy as sa

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'kb_suggestions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('ticket_id', sa.Integer(), nullable=False),
        sa.Column('slug', sa.String(length=200), nullable=True),
        sa.Column('rank', sa.Integer(), nullable=False),
        sa.Column('score', sa.Float(), nullable=True),
        sa.Column('suggested_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('solved_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_kb_suggestions_ticket', 'kb_suggestions', ['ticket_id', 'rank'])
    op.create_index('ix_kb_suggestions_suggested', 'kb_suggestions', ['suggested_at'])
    op.create_index('ix_kb_suggestions_slug', 'kb_suggestions', ['slug'])


def downgrade() -> None:
    op.drop_table('kb_suggestions')
