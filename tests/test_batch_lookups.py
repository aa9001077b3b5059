"""A batch asks the database once for what each of its mails asks (issue 22): whether its
blobs and dedupe key are stored, its sender's recent mail (the loop guard), a stored reply
to it, its sender's new tickets (the acknowledgement limit). On PostgreSQL each question
was a round trip, five a mail. What the mails decide must not change: a later mail of the
batch still sees what an earlier one added, and a blob the batch found stays out of gc's
reach until it commits."""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import mail, pg_schema
from sqlalchemy import event, select

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.mail.parse import parse_batch
from maildesk.pipeline.driver import Summary
from maildesk.pipeline.run import ingest
from maildesk.store.blobs import digest_of
from maildesk.store.gc import Freed, collect
from maildesk.store.models import Inbound, Message, OutboxMail, Ticket

PIPE = Envelope("pipe", None)
START = datetime(2026, 11, 2, 9, 30, tzinfo=timezone.utc)


def taken(app: App, mails: list[bytes], ahead: bool = True) -> Summary:
    """One batch; ahead: parsed first, as `maildesk ingest` does (the parse worker), which is
    what lets the batch look its questions up at once."""
    items = [(raw, PIPE) for raw in mails]
    parsed = parse_batch([(raw, None) for raw in mails], app.settings.limits) if ahead else None
    return ingest(app, items, parsed)


def written(sender: str, n: int, subject: str = "case", **headers: str) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, "support@localhost", f"{subject} {n}"
    m["Message-ID"] = f"<{subject}.{n}.{sender}>"
    m["Date"] = format_datetime(START + timedelta(seconds=10 * n))
    for k, v in headers.items():
        m[k.replace("_", "-")] = v
    m.set_content("disk full")
    return m.as_bytes()


def outcome(app: App) -> tuple[list[tuple[str, int | None]], Counter[str]]:
    """Each mail's state and ticket number, in arrival order; the outbox by template."""
    with app.sessions() as s:
        states = [(state, number) for state, number in s.execute(
            select(Inbound.state, Ticket.number)
            .outerjoin(Message, Message.id == Inbound.message_pk)
            .outerjoin(Ticket, Ticket.id == Message.ticket_id).order_by(Inbound.id))]
        sent = Counter(s.scalars(select(OutboxMail.template)))
    return states, sent


@pytest.fixture
def other_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A second, empty database of db_url's kind."""
    if not db_url.startswith("postgresql"):
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    with pg_schema() as url:
        yield url


Both = Callable[..., tuple[list[tuple[str, int | None]], Counter[str]]]


@pytest.fixture
def both_ways(make_app: Callable[..., App], db_url: str, other_url: str,
              tmp_path: Path) -> Both:
    """The batches taken by a desk that looks ahead and by one that asks mail by mail (no
    parse ahead): the same outcome, which is returned."""
    def run(batches: list[list[bytes]], **overrides: Any
            ) -> tuple[list[tuple[str, int | None]], Counter[str]]:
        ours = make_app(db_url, **overrides)
        other = make_app(other_url, **overrides, data_dir=str(tmp_path / "other"))
        for b in batches:
            taken(ours, b)
            taken(other, b, ahead=False)
        got = outcome(ours)
        assert outcome(other) == got
        return got
    return run


def test_the_same_mail_twice_in_a_batch_and_in_a_later_one_is_one_mail(
        both_ways: Both) -> None:
    a = written("ana@customer.test", 1)
    states, _ = both_ways([
        [a, written("bo@customer.test", 2), a], [written("cy@customer.test", 3), a]])
    assert states == [("ticketed", 1), ("ticketed", 2), ("duplicate", None),
                      ("ticketed", 3), ("duplicate", None)]


def test_the_loop_guard_counts_the_batchs_earlier_mails_and_the_stored_ones(
        both_ways: Both) -> None:
    """flood_limit 3: two mails stored, then a batch of three more and another sender's:
    the first of the batch is the third mail (a ticket), the next two are a loop."""
    robot = "robot@customer.test"
    states, _ = both_ways([
        [written(robot, 1), written(robot, 2)],
        [written(robot, 3), written("ana@customer.test", 4), written(robot, 5),
         written(robot, 6)]], desk={"flood_limit": 3, "flood_window": 600})
    assert [s for s, _ in states] == ["ticketed", "ticketed", "ticketed", "ticketed", "loop",
                                      "loop"]


def test_a_reply_threads_onto_a_ticket_opened_earlier_in_the_batch_or_before(
        both_ways: Both) -> None:
    """By References (the reply after its mail) and by a stored reply (the reply first, as
    an IMAP folder out of order gives them): in one batch and across two."""
    ana = "ana@customer.test"

    def reply(n: int, to: int) -> bytes:
        ref = f"<case.{to}.{ana}>"
        return written(ana, n, subject="re", In_Reply_To=ref, References=ref)

    states, _ = both_ways([
        [written(ana, 1), reply(2, 1)],          # ticket 1, its reply on it
        [reply(4, 3), written(ana, 3)],          # the reply first: ticket 2, its mail on it
        [reply(6, 5)], [written(ana, 5)]])       # the same across batches: ticket 3
    assert states == [("ticketed", 1), ("ticketed", 1), ("ticketed", 2), ("ticketed", 2),
                      ("ticketed", 3), ("ticketed", 3)]


def test_the_acknowledgement_limit_counts_the_batchs_new_tickets_and_the_stored_ones(
        both_ways: Both) -> None:
    """ack_limit 2: one ticket stored, three more in a batch: the second is acknowledged,
    the third gets the one notice of the limit, the fourth nothing."""
    ana = "ana@customer.test"
    _, sent = both_ways([
        [written(ana, 1)], [written(ana, 2), written("bo@customer.test", 3), written(ana, 4),
                            written(ana, 5)]], desk={"ack_window": 3600, "ack_limit": 2})
    assert (sent["acknowledgement"], sent["acknowledgement_limit"]) == (3, 1)


@contextmanager
def selects(app: App) -> Iterator[Counter[str]]:
    """SELECT statements sent while the block runs, by the table they read first."""
    seen: Counter[str] = Counter()

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        words = statement.split()
        if words[0] == "SELECT" and "FROM" in words:
            seen[words[words.index("FROM") + 1]] += 1
    event.listen(app.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(app.engine, "before_cursor_execute", count)


def test_a_batch_asks_the_same_few_questions_however_many_mails_it_has(
        make_app: Callable[..., App], db_url: str) -> None:
    """Five mails or twenty, each a new ticket with an attachment and an acknowledgement:
    the same SELECTs (they were five a mail)."""
    app = make_app(db_url, desk={"ack_window": 3600, "ack_limit": 10, "flood_limit": 10})

    def batch(first: int, n: int) -> list[bytes]:
        out = []
        for i in range(first, first + n):
            m = EmailMessage()
            m["From"], m["To"], m["Subject"] = f"c{i}@customer.test", "support@localhost", "x"
            m["Message-ID"], m["Date"] = f"<m{i}@customer.test>", format_datetime(START)
            m.set_content("see the log")
            m.add_attachment(f"log {i}".encode(), maintype="application",
                             subtype="octet-stream", filename="log.bin")
            out.append(m.as_bytes())
        return out
    taken(app, batch(0, 1))               # the desk's first ticket: its counter, its keys
    with selects(app) as few:
        assert taken(app, batch(10, 5)).new_tickets == 5
    with selects(app) as many:
        assert taken(app, batch(100, 20)).new_tickets == 20
    assert many == few, (few, many)
    assert sum(many.values()) < 20


def _stored_unreferenced(app: App, raw: bytes) -> str:
    """raw stored by a batch whose mail is gone: a blob nothing refers to, gc's to take."""
    with app.engine.begin() as conn:
        batch = app.blobs.batch(conn)
        digest = batch.put(raw)
        batch.finish()
    app.blobs.close()
    return digest


@pytest.mark.parametrize("backend", ["filesystem", "database"])
def test_a_blob_a_batch_expects_is_kept_from_gc_till_it_commits(
        make_app: Callable[..., App], db_url: str, backend: str) -> None:
    """The batch looks the blob up ahead (expect()), then gc runs, then the batch puts it
    and commits a row naming it. gc leaves it: on PostgreSQL it skips the row the lookup
    holds, on SQLite it waits for the batch's write lock. Without the hold it is freed."""
    app = make_app(db_url, storage={"backend": backend})
    raw = mail(message_id="<expected@customer.test>")
    digest = _stored_unreferenced(app, raw)
    result: dict[str, Freed] = {}
    with app.engine.begin() as conn:
        batch = app.blobs.batch(conn)
        batch.expect([digest])
        gc = threading.Thread(target=lambda: result.update(
            out=collect(app.blobs, app.engine, min_age=0, every=True)))
        gc.start()
        gc.join(timeout=3)
        assert batch.put(raw) == digest and not batch.pending      # found: not stored again
        batch.finish()
        conn.execute(Inbound.__table__.insert().values(
            received_at=datetime.now(timezone.utc), source="pipe", digest=digest,
            size=len(raw), state="processed", attempts=1, rcpt_to=[]))
    gc.join()
    assert result["out"].rows == 0
    assert app.blobs.get(digest) == raw
    other = mail(message_id="<not-expected@customer.test>")
    assert collect(app.blobs, app.engine, min_age=0, every=True).rows == 0
    _stored_unreferenced(app, other)
    assert collect(app.blobs, app.engine, min_age=0, every=True).rows == 1   # the control


@pytest.mark.parametrize("backend", ["filesystem", "database"])
def test_a_fresh_blob_stored_already_is_replaced_by_the_batchs_copy(
        make_app: Callable[..., App], db_url: str, backend: str) -> None:
    """put(fresh=True) asks nothing: when the bytes were stored after all, and gc takes
    that copy before the batch finishes, the batch's own copy is what its row names."""
    app = make_app(db_url, storage={"backend": backend})
    raw = mail(message_id="<composed@localhost>")
    digest = _stored_unreferenced(app, raw)
    with app.engine.begin() as conn:
        batch = app.blobs.batch(conn)
        assert batch.put(raw, fresh=True) == digest and digest in batch.pending
        if db_url.startswith("postgresql"):    # SQLite: gc would wait for this transaction
            assert collect(app.blobs, app.engine, min_age=0, every=True).rows == 1
        batch.finish()
        conn.execute(Inbound.__table__.insert().values(
            received_at=datetime.now(timezone.utc), source="pipe", digest=digest,
            size=len(raw), state="processed", attempts=1, rcpt_to=[]))
    assert app.blobs.get(digest) == raw
    assert collect(app.blobs, app.engine, min_age=0, every=True).rows == 0
    assert app.blobs.get(digest) == raw


def test_the_listeners_group_commit_looks_its_mails_up_at_once(
        make_app: Callable[..., App], db_url: str) -> None:
    """The SMTP listener stores the mails of a group commit in one transaction: one lookup
    for their blobs, not one a mail; a mail stored before is found, not stored again."""
    from maildesk.intake.inbound import accept
    app = make_app(db_url)
    first = mail(message_id="<g0@customer.test>")
    accept(app, [(first, PIPE)])
    group = [(mail(message_id=f"<g{i}@customer.test>"), PIPE) for i in range(1, 8)]
    with selects(app) as asked:
        ids = accept(app, [*group, (first, PIPE)])
    # one lookup for the group, and the copy it found read back to be checked
    assert len(ids) == 8 and asked["blob_index"] == 2, asked
    with app.engine.connect() as c:
        assert c.execute(select(Inbound.digest).where(Inbound.id == ids[-1])).scalar_one() \
            == digest_of(first)
