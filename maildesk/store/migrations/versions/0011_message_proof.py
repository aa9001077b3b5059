"""messages.proof: how the sender of a mail was proven (token, dkim,
authentication-results), "" when nothing proved it, NULL when not looked at

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('proof', sa.String(30), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.drop_column('proof')
