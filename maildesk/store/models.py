"""The tables. Every schema change here needs a migration in migrations/versions. The
four that storing a mail touches are Core tables of intake_tables.py, mapped here.

`digest` columns name a blob in the content-addressed store (blobs.py): files beside
the database, written and fsynced before the commit, or rows of blob_data in it.
"""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from .intake_tables import METADATA, T_BLOB_DATA, T_INBOUND, T_INDEX, T_NODES, utcnow
from .types import UTC


class Base(DeclarativeBase):
    metadata = METADATA
    type_annotation_map = {datetime: UTC, dict[str, Any]: JSON, list[str]: JSON}

    if TYPE_CHECKING:
        # SQLAlchemy types `__table__` as any FromClause, since a class may be mapped to a join
        # or a select; every class here has a `__tablename__`, so it is a Table, which is what
        # Core's insert(), update() and delete() take.
        __table__: ClassVar[Table]


class Counter(Base):
    """Gap-free sequences (ticket numbers) that work the same on both engines."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class Inbound(Base):
    """One accepted delivery (intake_tables.py declares its columns)."""

    __table__ = T_INBOUND
    id: Mapped[int]
    received_at: Mapped[datetime]
    source: Mapped[str]
    origin: Mapped[str | None]
    mail_from: Mapped[str | None]
    rcpt_to: Mapped[list[str]]
    digest: Mapped[str]
    size: Mapped[int]
    state: Mapped[str]
    reason: Mapped[str | None]
    traceback: Mapped[str | None]
    attempts: Mapped[int]
    processed_at: Mapped[datetime | None]
    message_pk: Mapped[int | None]
    queue: Mapped[str | None]


class Ticket(Base):
    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    requester: Mapped[str] = mapped_column(Text)
    requester_name: Mapped[str | None] = mapped_column(Text)
    cc: Mapped[list[str]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(20), default="new")
    type: Mapped[str] = mapped_column(String(20), default="incident")
    priority: Mapped[str] = mapped_column(String(10), default="P3")
    impact: Mapped[str] = mapped_column(String(10), default="medium")
    urgency: Mapped[str] = mapped_column(String(10), default="medium")
    tags: Mapped[list[str]] = mapped_column(default=list)
    problem: Mapped[str | None] = mapped_column(String(32))     # ref of the problem ticket
    # a problem ticket's record (migration 0015): what causes its incidents, how to get by
    # meanwhile, and whether that workaround is known to work (a known error)
    root_cause: Mapped[str | None] = mapped_column(Text)
    workaround: Mapped[str | None] = mapped_column(Text)
    known_error: Mapped[bool] = mapped_column(Boolean, default=False)
    resolved_by: Mapped[str | None] = mapped_column(String(32))  # the problem that resolved it
    category: Mapped[str | None] = mapped_column(Text)
    queue: Mapped[str] = mapped_column(String(64))
    assignee: Mapped[str | None] = mapped_column(Text)
    linked_to: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    reminded_at: Mapped[datetime | None] = mapped_column()   # pending: customer reminded

    messages: Mapped[list[Message]] = relationship(
        back_populates="ticket", order_by="Message.id", lazy="raise_on_sql")
    events: Mapped[list[Event]] = relationship(order_by="Event.id", lazy="raise_on_sql")

    # `tickets list`: newest first, filtered by any of these (migration 0012)
    __table_args__ = (Index("ix_tickets_status_updated", "status", "updated_at"),
                      Index("ix_tickets_requester_created", "requester", "created_at"),
                      Index("ix_tickets_created_id", "created_at", "id"),
                      Index("ix_tickets_status_created", "status", "created_at"),
                      Index("ix_tickets_queue_created", "queue", "created_at"),
                      Index("ix_tickets_assignee_created", "assignee", "created_at"),
                      Index("ix_tickets_problem", "problem"))


class Message(Base):
    """A mail on a ticket, ours (out) or theirs (in)."""

    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    message_id: Mapped[str] = mapped_column(Text, index=True)
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    direction: Mapped[str] = mapped_column(String(3))          # in | out
    visibility: Mapped[str] = mapped_column(String(10), default="public")
    from_addr: Mapped[str] = mapped_column(Text, default="")
    from_name: Mapped[str | None] = mapped_column(Text)
    to: Mapped[list[str]] = mapped_column(default=list)
    cc: Mapped[list[str]] = mapped_column(default=list)
    subject: Mapped[str] = mapped_column(Text, default="")
    date: Mapped[datetime] = mapped_column()
    text: Mapped[str] = mapped_column(Text, default="")
    quoted: Mapped[str] = mapped_column(Text, default="")     # history and signature, split off
    verdict: Mapped[str] = mapped_column(String(20), default="person")  # mail/classify.py
    digest: Mapped[str] = mapped_column(String(64), index=True)
    defects: Mapped[list[str]] = mapped_column(default=list)
    # how its sender was proven: token | dkim | authentication-results; "" nothing proved
    # it (agents and `tickets show` say "sender not verified"); None: not looked at
    proof: Mapped[str | None] = mapped_column(String(30))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    ticket: Mapped[Ticket] = relationship(back_populates="messages", lazy="raise_on_sql")

    __table_args__ = (Index("ix_messages_from_date", "from_addr", "date"),)
    attachments: Mapped[list[Attachment]] = relationship(
        order_by="Attachment.id", lazy="raise_on_sql")


class Attachment(Base):
    __tablename__ = "attachments"
    id: Mapped[int] = mapped_column(primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    filename: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64), index=True)


class Event(Base):
    """Everything that happens to a ticket: the audit trail, the rules' input, the reports' data."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (Index("ix_events_kind_at", "kind", "at"),)


class ThreadRef(Base):
    """A Message-ID that a ticket's mail answered (In-Reply-To, References): so that the mail
    it names, arriving later (imports and IMAP folders are not in date order), finds the
    ticket its reply opened."""

    __tablename__ = "thread_refs"
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    ref: Mapped[str] = mapped_column(Text, index=True)


class OutboxMail(Base):
    """A mail we owe someone; the rendered bytes are a blob, delivered by the outbox worker."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    template: Mapped[str] = mapped_column(String(64))
    envelope_from: Mapped[str] = mapped_column(Text)
    to: Mapped[list[str]] = mapped_column(default=list)
    subject: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(Text, index=True)
    digest: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10), default="queued")  # queued|sent|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (Index("ix_outbox_status_next", "status", "next_attempt_at"),)


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"
    id: Mapped[int] = mapped_column(primary_key=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    result: Mapped[str] = mapped_column(String(10))      # sent | retry | failed
    detail: Mapped[str] = mapped_column(Text, default="")


class BlobIndex(Base):
    """Where a packed blob lives (intake_tables.py declares its columns)."""

    __table__ = T_INDEX
    digest: Mapped[str]
    pack: Mapped[str]
    offset: Mapped[int]
    size: Mapped[int]


class BlobData(Base):
    """A blob kept in the database (intake_tables.py declares its columns)."""

    __table__ = T_BLOB_DATA
    digest: Mapped[str]
    size: Mapped[int]
    data: Mapped[bytes]


class Node(Base):
    """A daemon (`maildesk serve`) on this desk (intake_tables.py declares its columns;
    `maildesk nodes status` reads them)."""

    __table__ = T_NODES
    name: Mapped[str]
    host: Mapped[str]
    pid: Mapped[int]
    data_dir: Mapped[str]
    storage: Mapped[str]
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    stopped_at: Mapped[datetime | None]
    leads: Mapped[list[str]]


class DeskKey(Base):
    """A reply-token key; the newest generation signs, the one before still verifies."""

    __tablename__ = "desk_keys"
    generation: Mapped[int] = mapped_column(Integer, primary_key=True)
    secret: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column()


class ImapState(Base):
    """Per mailbox: how far we have committed, and how the last attempt went."""

    __tablename__ = "imap_state"
    mailbox: Mapped[str] = mapped_column(String(100), primary_key=True)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    taken: Mapped[int] = mapped_column(BigInteger, default=0)
    connected: Mapped[bool] = mapped_column(Boolean, default=False)
    last_success_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column()


class SlaClock(Base):
    """One SLA clock of a ticket (first response, next response, resolution).

    Business time is counted in segments: `elapsed` holds the finished ones,
    `running_since` the start of the current one. `next_check_at` is when the
    SLA scan must look at the clock again (its warning, its breach, its next
    escalation level); NULL when there is nothing left to watch. The scan
    reads only that index, and claims each step with a conditional update,
    so a warning or breach fires once, also with two daemons on one database.
    """

    __tablename__ = "sla_clocks"
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    kind: Mapped[str] = mapped_column(String(20))     # first_response | next_response | resolution
    policy: Mapped[str] = mapped_column(String(64))
    target: Mapped[float] = mapped_column()            # business seconds
    elapsed: Mapped[float] = mapped_column(default=0.0)
    state: Mapped[str] = mapped_column(String(10))     # running | paused | stopped
    started_at: Mapped[datetime] = mapped_column()
    running_since: Mapped[datetime | None] = mapped_column()
    due_at: Mapped[datetime | None] = mapped_column()  # while running
    warn_at: Mapped[datetime | None] = mapped_column()
    stopped_at: Mapped[datetime | None] = mapped_column()
    warned_at: Mapped[datetime | None] = mapped_column()
    breached_at: Mapped[datetime | None] = mapped_column(index=True)
    level: Mapped[int] = mapped_column(Integer, default=0)   # escalation levels fired
    next_check_at: Mapped[datetime | None] = mapped_column(index=True)
    pauses: Mapped[list[Any]] = mapped_column(JSON, default=list)   # [[from, to|None], ...]

    # (ticket_id, kind): a ticket's clock of a kind, which reports look up per ticket;
    # (kind, stopped_at, ...): the clocks stopped in a report's period, with every column
    # the report reads of them, so that a year of them is read from the index alone
    __table_args__ = (Index("ix_sla_clocks_ticket_kind", "ticket_id", "kind"),
                      Index("ix_sla_clocks_kind_stopped", "kind", "stopped_at", "ticket_id",
                            "elapsed", "started_at", "breached_at"))


class JobRun(Base):
    """A scheduled job's last run and its lease: a job runs once at a time across daemons,
    and a restart after downtime catches a missed run up once."""

    __tablename__ = "job_runs"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_run_at: Mapped[datetime | None] = mapped_column()
    lease_until: Mapped[datetime | None] = mapped_column()
    owner: Mapped[str | None] = mapped_column(String(100))
    last_result: Mapped[str | None] = mapped_column(Text)


class Survey(Base):
    """The one satisfaction survey of a ticket: sent, and maybe answered."""

    __tablename__ = "surveys"
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), unique=True)
    requester: Mapped[str] = mapped_column(Text)
    sent_at: Mapped[datetime] = mapped_column()
    answered_at: Mapped[datetime | None] = mapped_column()
    score: Mapped[int | None] = mapped_column(Integer)       # 1-5; good/bad are 5/1
    satisfied: Mapped[bool | None] = mapped_column(Boolean)
    comment: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_surveys_sent_at", "sent_at"),
                      Index("ix_surveys_answered_at", "answered_at"),
                      Index("ix_surveys_requester_sent", "requester", "sent_at"))


class SurveyOptOut(Base):
    """A requester who asked for no more surveys."""

    __tablename__ = "survey_optouts"
    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class KbSuggestion(Base):
    """An article the desk put in a ticket's acknowledgement, at its rank (1 first), and
    whether the requester said it solved the ticket. A search that found nothing above
    the threshold is a row with no slug (rank 0): the report's search gaps."""

    __tablename__ = "kb_suggestions"
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    slug: Mapped[str | None] = mapped_column(String(200))
    rank: Mapped[int] = mapped_column(Integer)
    score: Mapped[float | None] = mapped_column(Float)
    suggested_at: Mapped[datetime] = mapped_column()
    solved_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (Index("ix_kb_suggestions_ticket", "ticket_id", "rank"),
                      Index("ix_kb_suggestions_suggested", "suggested_at"),
                      Index("ix_kb_suggestions_slug", "slug"))


class ProblemProposal(Base):
    """A cluster of similar incidents put to a queue's group lead as one problem
    (`maildesk problems suggest`, the job problems.suggest): the tickets' ids, the words
    they share, and the problem ticket made of it when the lead replied."""

    __tablename__ = "problem_proposals"
    id: Mapped[int] = mapped_column(primary_key=True)
    proposed_at: Mapped[datetime] = mapped_column()
    queue: Mapped[str] = mapped_column(String(64))
    lead: Mapped[str | None] = mapped_column(Text)            # whom it was mailed to
    tickets: Mapped[list[int]] = mapped_column(JSON, default=list)
    words: Mapped[list[str]] = mapped_column(JSON, default=list)
    problem: Mapped[str | None] = mapped_column(String(32))   # ref, once accepted
    accepted_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (Index("ix_problem_proposals_proposed", "proposed_at"),)


class TriageModel(Base):
    """A triage model trained on the desk's tickets (ml/triage.py): its numbers as an
    npz archive (no pickle: loading it runs no code), and what it was measured to do.
    The newest is the one in use, on every node."""

    __tablename__ = "triage_models"
    id: Mapped[int] = mapped_column(primary_key=True)
    trained_at: Mapped[datetime] = mapped_column()
    tickets: Mapped[int] = mapped_column(Integer)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class PrivacyAudit(Base):
    """A requester's data exported or erased, or a retention run: who ran it (the OS
    user), when, and how much it touched (`maildesk requester audit`). An erased
    requester is named by their pseudonym (tickets/privacy.py), never by the address."""

    __tablename__ = "privacy_audit"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(20))      # export | erase | retention
    subject: Mapped[str | None] = mapped_column(String(100))
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    detail: Mapped[str | None] = mapped_column(Text)
