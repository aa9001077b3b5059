"""The ingest stages, in order: each a module of its own, each a function of (Context,
Work) that fills in Work or ends the mail's journey with a named Outcome
(core/context.py). What happens to a ticket, a stage says by fire() (core/fire.py): the
rules, the SLA clocks and the notices follow from there, not from stages of their own.

Stages do not import each other; what several need is in pipeline/work.py and
pipeline/sender.py. The driver parses each mail before the first stage
(pipeline/parse.py) and reads this list from the App, so a test can run its own.
"""
from __future__ import annotations

from ..work import Stage
from .agent import agent_stage
from .authenticate import authenticate_stage
from .classify import classify_stage
from .customer import customer_stage
from .dedupe import dedupe_stage
from .identify import identify_stage
from .proposal import proposal_stage
from .solved import solved_stage
from .status import status_stage
from .survey import survey_stage
from .thread import thread_stage

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
