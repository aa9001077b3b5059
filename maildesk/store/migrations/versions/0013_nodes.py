"""several daemons on one database (issue 18): blob_data, raw mail and attachments kept
in the database itself (storage.backend: database); nodes, each daemon's heartbeat and
what it leads; desk_keys, the reply-token keys every node shares

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-26
"""
from alembic import op
import sqlalchemy as sa

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'blob_data',
        sa.Column('digest', sa.String(length=64), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('digest'),
    )
    op.create_table(
        'nodes',
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('host', sa.String(length=255), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=False),
        sa.Column('data_dir', sa.Text(), nullable=False),
        sa.Column('storage', sa.String(length=20), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('leads', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_table(
        'desk_keys',
        sa.Column('generation', sa.Integer(), nullable=False),
        sa.Column('secret', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('generation'),
    )


def downgrade() -> None:
    op.drop_table('desk_keys')
    op.drop_table('nodes')
    op.drop_table('blob_data')
