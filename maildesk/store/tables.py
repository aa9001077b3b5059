"""The table handles, in one place, and the column lists derived from them.

Core statements (bulk inserts and updates) work on tables, not on ORM
objects; every module that writes or reads rows in bulk takes its handle
from here, and no list of a table's columns is written out by hand.
"""
from __future__ import annotations

from . import intake_tables, models

T_TICKETS, T_MESSAGES = models.Ticket.__table__, models.Message.__table__
T_ATTACH, T_EVENTS = models.Attachment.__table__, models.Event.__table__
T_OUTBOX, T_ATTEMPTS = models.OutboxMail.__table__, models.DeliveryAttempt.__table__
T_INBOUND, T_COUNTERS = intake_tables.T_INBOUND, models.Counter.__table__
T_CLOCKS, T_REFS = models.SlaClock.__table__, models.ThreadRef.__table__
T_SURVEYS, T_OPT_OUTS = models.Survey.__table__, models.SurveyOptOut.__table__
T_RUNS, T_NODES = models.JobRun.__table__, intake_tables.T_NODES
T_BLOB_DATA, T_KEYS = intake_tables.T_BLOB_DATA, models.DeskKey.__table__
T_KB, T_PROPOSALS = models.KbSuggestion.__table__, models.ProblemProposal.__table__
T_TRIAGE, T_AUDIT = models.TriageModel.__table__, models.PrivacyAudit.__table__

# a ticket's columns as TicketRow holds them: all but the primary key
TICKET_COLUMNS = tuple(c.name for c in T_TICKETS.c if c.name != "id")
# those a changed ticket writes: not its number, reference or birth
TICKET_CHANGES = tuple(c for c in TICKET_COLUMNS if c not in ("number", "ref", "created_at"))
