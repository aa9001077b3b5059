"""Two nodes on one database at the same moment (issue 18), staged in one process with two
Apps, so that each race happens every time, not once in a while: the same mail stored by
both, two changes to one ticket, the first ticket of a new desk taken by both."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import mail
from sqlalchemy import func, select

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import ingest
from maildesk.pipeline.stages import STAGES
from maildesk.store.models import Counter, Inbound, Message, Ticket
from maildesk.tickets.ledger import Ledger

PIPE = Envelope(source="pipe", mail_from=None)


def count(app: App, model: Any) -> int:
    with app.engine.connect() as c:
        return int(c.scalar(select(func.count()).select_from(model)) or 0)


def held_at_write(release: threading.Event, reached: threading.Event
                  ) -> tuple[tuple[str, Callable[[Any, Any], None]], ...]:
    """The pipeline's stages, and then one that waits: the node has decided everything and
    holds its locks, but has written nothing yet."""
    def wait(ctx: Any, w: Any) -> None:
        reached.set()
        assert release.wait(30)
    return (*STAGES, ("wait", wait))


def test_the_same_mail_stored_by_two_nodes_at_once_makes_one_ticket(
        make_app: Callable[..., App], db_url: str) -> None:
    """Node A has taken the mail and the next ticket number but not committed; node B takes
    the same mail (an MTA that timed out and sent it again to the other MX). B's write then
    collides with A's on the mail's dedupe key: that is a lost race, retried, after which B
    sees A's ticket and records a duplicate. It used to raise IntegrityError, and the
    mail was quarantined (or a whole batch rolled back)."""
    a, b = make_app(db_url), make_app(db_url)
    ingest(a, [(mail(subject="warm-up"), PIPE)])
    release, reached = threading.Event(), threading.Event()
    a.stages = held_at_write(release, reached)
    raw = mail(subject="VPN drops every hour")
    results: dict[str, Any] = {}
    ta = threading.Thread(target=lambda: results.update(a=ingest(a, [(raw, PIPE)]).as_dict()))
    ta.start()
    assert reached.wait(30)
    tb = threading.Thread(target=lambda: results.update(b=ingest(b, [(raw, PIPE)]).as_dict()))
    tb.start()
    time.sleep(0.5)                     # B runs until it waits for A (or is done)
    release.set()
    ta.join(30)
    tb.join(30)
    assert results["a"]["new_tickets"] == 1
    assert results["b"]["quarantined"] == 0
    assert results["b"]["duplicates"] == 1, results
    assert count(a, Ticket) == 2
    with a.engine.connect() as c:
        assert c.scalar(select(func.count()).where(Message.direction == "in")) == 2
        assert c.scalar(select(Counter.value)) == 2          # no number lost to B's retry
        assert sorted(c.scalars(select(Inbound.state))) == ["duplicate", "ticketed", "ticketed"]


def test_two_changes_to_one_ticket_at_once_both_stand(make_app: Callable[..., App],
                                                      db_url: str) -> None:
    """Node A changes a ticket's priority and node B its category in overlapping
    transactions. Each used to write the whole row as it had read it, so whichever
    committed last undid the other's change."""
    a, b = make_app(db_url), make_app(db_url)
    ingest(a, [(mail(), PIPE)])
    done = threading.Event()

    def change_category() -> None:
        with b.engine.begin() as conn:
            ledger = Ledger(conn, "MD")
            ticket = ledger.by_number(1)       # on PostgreSQL: waits for A's commit
            assert ticket is not None
            ledger.change(ticket, category="network")
            ledger.write()
        done.set()

    with a.engine.begin() as conn:
        ledger = Ledger(conn, "MD")
        ticket = ledger.by_number(1)
        assert ticket is not None
        ledger.change(ticket, priority="P1")
        other = threading.Thread(target=change_category)
        other.start()
        time.sleep(0.5)                        # B reads (or waits to) while A holds the row
        ledger.write()
    other.join(30)
    assert done.is_set()
    with a.engine.connect() as c:
        row = c.execute(select(Ticket.priority, Ticket.category)).one()
    assert tuple(row) == ("P1", "network")


def test_a_new_desk_takes_its_first_tickets_on_two_nodes_at_once(
        make_app: Callable[..., App], db_url: str) -> None:
    """Both nodes find no ticket counter and make it: one insert used to fail on
    counters_pkey. Numbers stay gap-free."""
    a, b = make_app(db_url), make_app(db_url)
    release, reached = threading.Event(), threading.Event()
    a.stages = held_at_write(release, reached)
    results: dict[str, Any] = {}
    ta = threading.Thread(target=lambda: results.update(
        a=ingest(a, [(mail(subject="first"), PIPE)]).as_dict()))
    ta.start()
    assert reached.wait(30)
    tb = threading.Thread(target=lambda: results.update(
        b=ingest(b, [(mail(subject="second"), PIPE)]).as_dict()))
    tb.start()
    time.sleep(0.5)
    release.set()
    ta.join(30)
    tb.join(30)
    assert results["a"]["new_tickets"] == results["b"]["new_tickets"] == 1, results
    with a.engine.connect() as c:
        assert sorted(c.scalars(select(Ticket.ref))) == ["MD-1", "MD-2"]


@pytest.mark.parametrize("attempts", [1])
def test_a_conflict_that_does_not_go_away_is_raised(attempts: int) -> None:
    """retried() gives up after its attempts and raises the conflict as it was; any other
    error at once."""
    from sqlalchemy.exc import IntegrityError

    from maildesk.store.db import is_conflict, retried

    class Orig(Exception):
        sqlstate = "23505"

    calls = []

    def work() -> None:
        calls.append(1)
        raise IntegrityError("INSERT", {}, Orig("duplicate key"))
    with pytest.raises(IntegrityError) as e:
        retried(work, "test", attempts=3)
    assert is_conflict(e.value) and len(calls) == 3
    calls.clear()

    def broken() -> None:
        calls.append(1)
        raise ValueError("not a race")
    with pytest.raises(ValueError):
        retried(broken, "test", attempts=attempts + 2)
    assert len(calls) == 1


def test_three_nodes_making_a_new_desk_at_once(make_app: Callable[..., App],
                                               db_url: str) -> None:
    """All nodes of a new desk (or of one just upgraded) start together: one makes the
    tables and the first key, the others wait for it and find them made. Each used to
    run the migrations too and fail on tables that were there by then."""
    apps: list[App] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            apps.append(make_app(db_url))
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)
    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(apps) == 3
    assert len({a.secrets for a in apps}) == 1


@pytest.mark.parametrize("by", ["references", "tag"])
def test_a_reply_drained_on_one_node_while_another_holds_its_original_joins_its_ticket(
        make_app: Callable[..., App], db_url: str, by: str) -> None:
    """Node A's batch holds a customer's first mail, uncommitted; node B's batch takes the
    customer's reply, which came a moment later, naming the first by References or by
    the ticket's tag. B used to look for the original, find nothing (A had not committed)
    and open a second ticket for the reply. B now waits for A only then: a batch of
    mail that names nothing runs beside A's."""
    from maildesk.intake.inbound import accept
    from maildesk.pipeline.run import drain
    a, b = make_app(db_url), make_app(db_url)
    first = mail(subject="Laptop will not boot", message_id="<first@customer.test>")
    threading_by = {"In_Reply_To": "<first@customer.test>",
                    "References": "<first@customer.test>"} if by == "references" else {}
    reply = mail(subject=("Re: Laptop will not boot" if by == "references"
                          else "Re: [MD-1] Laptop will not boot"), body="Still black.\n",
                 message_id="<second@customer.test>", **threading_by)
    smtp = Envelope(source="smtp", mail_from="ana@customer.test", rcpt_to=("support@localhost",))
    accept(a, [(first, smtp)])
    accept(a, [(reply, smtp)])
    release, reached = threading.Event(), threading.Event()
    a.stages = held_at_write(release, reached)
    ta = threading.Thread(target=lambda: drain(a, limit=1))
    ta.start()
    assert reached.wait(30)
    tb = threading.Thread(target=lambda: drain(b, limit=1))
    tb.start()
    time.sleep(0.5)                     # B claims the reply, and waits (or threads it alone)
    release.set()
    ta.join(30)
    tb.join(30)
    with a.engine.connect() as c:
        assert list(c.scalars(select(Ticket.ref))) == ["MD-1"]
        assert c.scalar(select(func.count()).where(Message.direction == "in")) == 2


def test_drain_sizes_its_batches_to_the_budget_while_smtp_mail_comes(
        make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch) -> None:
    """With a budget (SMTP mail coming, on SQLite) the first batch is one mail, the next
    as many as fit the budget at the CPU time per mail that one took; with none (a
    backlog, nothing coming by SMTP) whole batches. Each is one transaction the listener's
    commit may wait for (store/turns.py)."""
    from maildesk.intake.inbound import accept
    from maildesk.pipeline import run
    app = make_app()
    env = Envelope(source="smtp", mail_from="ana@customer.test", rcpt_to=("support@localhost",))
    accept(app, [(mail(subject=f"case {i}", message_id=f"<b{i}@customer.test>"), env)
                 for i in range(30)])
    sizes: list[int] = []
    real = run._drain_batch

    def counted(app: App, limit: int, only: int | None = None) -> Any:
        sizes.append(limit)
        return real(app, limit, only)
    monkeypatch.setattr(run, "_drain_batch", counted)
    budgets = iter([None, None, *([1e-9] * 40)])   # a backlog, then SMTP mail comes
    summary = run.drain(app, limit=10, budget=lambda: next(budgets))
    assert summary.new_tickets == 30
    assert sizes[:2] == [10, 10], "whole batches while nothing comes by SMTP"
    assert set(sizes[2:]) == {1}, "a mail a transaction when the budget is that tight"
    assert len(sizes) == 2 + 10 + 1                  # and a last look that finds none
