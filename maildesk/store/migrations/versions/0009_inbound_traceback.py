"""inbound.traceback: where maildesk failed on a mail it quarantined, for whoever fixes it;
indexes on the digest columns, so that what refers to a blob is found without a scan
(`blobs verify`, `ingest --repair`, damaged-blob errors)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('inbound', sa.Column('traceback', sa.Text(), nullable=True))
    op.create_index('ix_inbound_digest', 'inbound', ['digest'])
    op.create_index('ix_messages_digest', 'messages', ['digest'])
    op.create_index('ix_attachments_digest', 'attachments', ['digest'])


def downgrade() -> None:
    op.drop_index('ix_attachments_digest', 'attachments')
    op.drop_index('ix_messages_digest', 'messages')
    op.drop_index('ix_inbound_digest', 'inbound')
    op.drop_column('inbound', 'traceback')
