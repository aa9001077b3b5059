"""problem records (issue 20): a problem ticket's root cause, workaround and known-error
flag; an incident's resolved_by, the problem whose resolution resolved it; an index on
tickets.problem, by which a problem finds its incidents

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tickets') as t:
        t.add_column(sa.Column('root_cause', sa.Text(), nullable=True))
        t.add_column(sa.Column('workaround', sa.Text(), nullable=True))
        t.add_column(sa.Column('known_error', sa.Boolean(), nullable=False,
                               server_default=sa.false()))
        t.add_column(sa.Column('resolved_by', sa.String(length=32), nullable=True))
    op.create_index('ix_tickets_problem', 'tickets', ['problem'])


def downgrade() -> None:
    op.drop_index('ix_tickets_problem', 'tickets')
    with op.batch_alter_table('tickets') as t:
        for name in ('resolved_by', 'known_error', 'workaround', 'root_cause'):
            t.drop_column(name)
