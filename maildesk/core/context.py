"""What the pipeline, the jobs and the SLA scan work through, and the named ways a mail's
journey can end early.

Outcomes derive from BaseException (as Mailman's DiscardMessage does) so that
no `except Exception` in a stage can swallow them; only the pipeline's driver
catches them. They live here, below the pipeline, because a rule (run by
fire()) may end a mail's journey too: `drop: spam`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..config.schema import Settings
from ..kb.library import Library
from ..notify.templates import Templates
from ..rules.engine import EMPTY, RuleSet
from ..sla.policy import Slas
from ..store.blobs import BlobBatch
from ..tickets.ledger import Ledger
from ..tickets.similar import SimilarTickets

if TYPE_CHECKING:       # numpy and scipy load with the first model, not with the pipeline
    from ..ml.triage import Model


@dataclass(frozen=True)
class Context:
    """A batch's view of the desk on one transaction. `now` is the batch's clock.

    history: an import of old mail (`maildesk ingest --history`). Each mail's own date is
    `now` for all it does (pipeline/driver.py); no mail goes out (core/outbox.py); its SLA
    clocks are left for the import's end to settle (scheduler/sla_scan.py)."""

    ledger: Ledger
    settings: Settings
    blobs: BlobBatch
    templates: Templates
    secrets: tuple[bytes, ...]     # tokens are made with the first, read with any
    now: datetime
    rules: RuleSet = EMPTY
    slas: Slas | None = None       # None: no SLA clocks (tests of other things)
    kb: Library = field(default_factory=Library)    # the knowledge base: none by default
    # resolved incidents' vectors, for similar tickets: one per process (App), kept
    similar: SimilarTickets = field(default_factory=SimilarTickets)
    dns: Callable[..., Any] | None = None   # DKIM key lookups; None: the system resolver
    triage: Model | None = None     # the triage model in use; None: no predictions
    history: bool = False

    def write(self) -> None:
        """What the batch decided into the tables, its blobs durable and indexed (the
        caller commits)."""
        self.ledger.write()
        self.blobs.finish()


class Outcome(BaseException):
    """A stage decided this mail's fate; what it wrote so far is kept."""

    state = "?"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Duplicate(Outcome):
    state = "duplicate"


class Refused(Outcome):
    state = "refused"


class Dropped(Outcome):
    """A rule dropped it (spam): kept raw, no ticket; what the stages wrote is rolled back."""

    state = "spam"


class Classified(Outcome):
    """A machine's mail that makes no ticket (auto-reply, loop, bounce, bulk): kept, noted."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.state = kind


class Quarantined(Outcome):
    """Kept raw for a person to look at; what the stages wrote is rolled back."""

    state = "quarantined"
