"""tickets: impact, urgency, tags and the problem they belong to

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('impact', sa.String(length=10), nullable=False,
                                      server_default='medium'))
        batch_op.add_column(sa.Column('urgency', sa.String(length=10), nullable=False,
                                      server_default='medium'))
        batch_op.add_column(sa.Column('tags', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('problem', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_column('problem')
        batch_op.drop_column('tags')
        batch_op.drop_column('urgency')
        batch_op.drop_column('impact')
