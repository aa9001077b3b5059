"""The table handles, in one place, and the column lists derived from them.

Core statements (bulk inserts and updates) work on tables, not on ORM
objects; every module that writes or reads rows in bulk takes its handle
from here, and no list of a table's columns is written out by hand.
"""
from __future__ import annotations

from sqlalchemy import Table

from . import models


def _table(model: type[models.Base]) -> Table:
    """The model's Table (`__table__` is typed as any FromClause)."""
    return models.Base.metadata.tables[model.__tablename__]


T_TICKETS, T_MESSAGES = _table(models.Ticket), _table(models.Message)
T_ATTACH, T_EVENTS = _table(models.Attachment), _table(models.Event)
T_OUTBOX, T_ATTEMPTS = _table(models.OutboxMail), _table(models.DeliveryAttempt)
T_INBOUND, T_COUNTERS = _table(models.Inbound), _table(models.Counter)
T_CLOCKS, T_REFS = _table(models.SlaClock), _table(models.ThreadRef)
T_SURVEYS, T_OPT_OUTS = _table(models.Survey), _table(models.SurveyOptOut)
T_RUNS = _table(models.JobRun)

# a ticket's columns as TicketRow holds them: all but the primary key
TICKET_COLUMNS = tuple(c.name for c in T_TICKETS.c if c.name != "id")
