"""surveys and survey_optouts; sla_clocks (kind, stopped_at) for reports

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'surveys',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('ticket_id', sa.Integer(), nullable=False),
        sa.Column('requester', sa.Text(), nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('score', sa.Integer(), nullable=True),
        sa.Column('satisfied', sa.Boolean(), nullable=True),
        sa.Column('comment', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('ticket_id'),
    )
    op.create_index('ix_surveys_sent_at', 'surveys', ['sent_at'])
    op.create_index('ix_surveys_answered_at', 'surveys', ['answered_at'])
    op.create_index('ix_surveys_requester_sent', 'surveys', ['requester', 'sent_at'])
    op.create_table(
        'survey_optouts',
        sa.Column('address', sa.String(length=320), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('address'),
    )
    op.create_index('ix_sla_clocks_kind_stopped', 'sla_clocks', ['kind', 'stopped_at'])


def downgrade() -> None:
    op.drop_index('ix_sla_clocks_kind_stopped', 'sla_clocks')
    op.drop_table('survey_optouts')
    op.drop_index('ix_surveys_requester_sent', 'surveys')
    op.drop_index('ix_surveys_answered_at', 'surveys')
    op.drop_index('ix_surveys_sent_at', 'surveys')
    op.drop_table('surveys')
