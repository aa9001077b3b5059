"""The tickets and messages tables as Core sees them without the ORM: the columns that
`tickets list` (tickets/listing.py) and the full-text search (search.py) read.

models.py is the schema, and tables.py its handles; importing them (the ORM and every
mapped class) costs a listing a third of its time. A test checks each column here
against models.py: name and type.
"""
from __future__ import annotations

from sqlalchemy import JSON, Boolean, Integer, String, Text, column, table

from .types import UTC

TICKETS = table(
    "tickets", column("id", Integer), column("ref", String), column("subject", Text),
    column("requester", Text), column("requester_name", Text), column("cc", JSON),
    column("status", String), column("priority", String), column("impact", String),
    column("urgency", String), column("tags", JSON), column("problem", String),
    column("root_cause", Text), column("workaround", Text), column("known_error", Boolean),
    column("resolved_by", String), column("category", Text), column("queue", String),
    column("type", String), column("assignee", Text), column("created_at", UTC),
    column("updated_at", UTC))
MESSAGES = table("messages", column("id", Integer), column("ticket_id", Integer),
                 column("direction", String))
