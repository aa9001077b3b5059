"""messages: the verdict of the classifier (person, auto-reply, bulk, loop, ...)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('verdict', sa.String(length=20), nullable=False,
                                      server_default='person'))
        batch_op.create_index('ix_messages_from_date', ['from_addr', 'date'])
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.create_index('ix_tickets_requester_created', ['requester', 'created_at'])


def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index('ix_tickets_requester_created')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_from_date')
        batch_op.drop_column('verdict')
