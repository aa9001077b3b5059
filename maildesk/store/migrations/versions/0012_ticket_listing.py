"""tickets list at scale: indexes for the newest-first listing and its filters, and
message_search, the full-text index of the mail people wrote (store/search.py), with
the rows of the messages already stored

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27
"""
from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

INDEXES = {
    'ix_tickets_created_id': ['created_at', 'id'],
    'ix_tickets_status_created': ['status', 'created_at'],
    'ix_tickets_queue_created': ['queue', 'created_at'],
    'ix_tickets_assignee_created': ['assignee', 'created_at'],
}
# the same cut as store/search.py's document() and SEARCHED_CHARS, in SQL
DOCUMENT = "substr(coalesce(subject, '') || char(10) || coalesce(text, ''), 1, 100000)"


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, 'tickets', columns)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("CREATE TABLE message_search ("
                   "message_id INTEGER PRIMARY KEY REFERENCES messages (id), "
                   "body TSVECTOR NOT NULL)")
        op.execute("INSERT INTO message_search (message_id, body) SELECT id, "
                   "to_tsvector('simple', " + DOCUMENT.replace('char(10)', 'chr(10)') + ") "
                   "FROM messages WHERE direction = 'in'")
        op.execute("CREATE INDEX ix_message_search_body ON message_search USING gin (body)")
    else:
        op.execute("CREATE VIRTUAL TABLE message_search USING fts5("
                   "body, tokenize = 'unicode61 remove_diacritics 2')")
        op.execute("INSERT INTO message_search (rowid, body) SELECT id, " + DOCUMENT +
                   " FROM messages WHERE direction = 'in'")


def downgrade() -> None:
    op.execute("DROP TABLE message_search")
    for name in INDEXES:
        op.drop_index(name, 'tickets')
