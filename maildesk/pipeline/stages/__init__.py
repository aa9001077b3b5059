"""The ingest stages, in order: each a module of its own, each a function of (Context,
Work) that fills in Work or ends the mail's journey with a named Outcome
(core/context.py). What happens to a ticket, a stage says by fire() (core/fire.py): the
rules, the SLA clocks and the notices follow from there, not from stages of their own.

Stages do not import each other; what several need is in pipeline/work.py and
pipeline/sender.py. The driver parses each mail before the first stage
(pipeline/parse.py) and reads this list from the App, so a test can run its own.

look_ahead() asks the database, once for a batch, what the stages will ask once per mail
(tickets/ledger.py's expect()): each stage that asks says what, in its *_ahead function.
"""
from __future__ import annotations

from ...core.context import Context
from ...mail.parse import ParsedMail
from ...store.blobs import digest_of
from ..parse import parse_mail
from ..work import Accepted, Stage
from .agent import agent_stage
from .authenticate import authenticate_stage
from .classify import classify_ahead, classify_stage
from .customer import customer_ahead, customer_stage
from .dedupe import dedupe_ahead, dedupe_stage
from .identify import identify_stage
from .proposal import proposal_stage
from .solved import solved_stage
from .status import status_stage
from .survey import survey_stage
from .thread import thread_ahead, thread_stage

STAGES: tuple[tuple[str, Stage], ...] = (
    ("dedupe", dedupe_stage),
    ("classify", classify_stage),
    ("authenticate", authenticate_stage),
    ("survey", survey_stage),
    ("solved", solved_stage),
    ("status", status_stage),
    ("proposal", proposal_stage),
    ("thread", thread_stage),
    ("identify", identify_stage),
    ("agent", agent_stage),
    ("customer", customer_stage),
)
AHEAD = (dedupe_ahead, classify_ahead, thread_ahead, customer_ahead)


def look_ahead(ctx: Context, batch: list[Accepted]) -> None:
    """The batch's lookups made at once, for the mails parsed already (by the parse-ahead
    worker: a mail parsed at its turn asks at its turn), as the stages will see them; and
    the blobs of their attachments. Answers only: what a mail decides is decided at its
    turn, with what the mails before it added."""
    mails = [parse_mail(ctx, a) for a in batch if isinstance(a.parsed_ahead, ParsedMail)]
    if not mails:
        return
    ctx.blobs.expect(digest_of(f.data) for p in mails for f in p.attachments)
    for ahead in AHEAD:
        ahead(ctx, mails)
