"""sla_clocks: SLA clocks per ticket; job_runs: scheduled jobs' last run and lease;
tickets: reminded_at, and (status, updated_at) for the jobs that look for old tickets

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'sla_clocks',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('ticket_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('policy', sa.String(length=64), nullable=False),
        sa.Column('target', sa.Float(), nullable=False),
        sa.Column('elapsed', sa.Float(), nullable=False),
        sa.Column('state', sa.String(length=10), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('running_since', sa.DateTime(timezone=True), nullable=True),
        sa.Column('due_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('warn_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('warned_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('breached_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('level', sa.Integer(), nullable=False),
        sa.Column('next_check_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('pauses', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_sla_clocks_ticket_kind', 'sla_clocks', ['ticket_id', 'kind'])
    op.create_index('ix_sla_clocks_next_check_at', 'sla_clocks', ['next_check_at'])
    op.create_table(
        'job_runs',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('last_run_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('owner', sa.String(length=100), nullable=True),
        sa.Column('last_result', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('name'),
    )
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reminded_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_index('ix_tickets_status')
        batch_op.create_index('ix_tickets_status_updated', ['status', 'updated_at'])


def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index('ix_tickets_status_updated')
        batch_op.create_index('ix_tickets_status', ['status'])
        batch_op.drop_column('reminded_at')
    op.drop_table('job_runs')
    op.drop_index('ix_sla_clocks_next_check_at', 'sla_clocks')
    op.drop_index('ix_sla_clocks_ticket_kind', 'sla_clocks')
    op.drop_table('sla_clocks')
