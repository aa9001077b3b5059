"""Articles in the acknowledgement: the customer's own words find them, a click on "this
solved it" resolves the ticket as self-service, and rules, queues and the threshold decide
how many; forged clicks, auto-replies and other people's tokens change nothing."""
from __future__ import annotations

import email
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import mail
from sqlalchemy import select

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import ingest
from maildesk.store.models import Inbound, KbSuggestion, OutboxMail, Ticket
from maildesk.tickets.views import show_ticket

MON = datetime(2026, 11, 16, 10, tzinfo=timezone.utc)
PIPE = Envelope("pipe", None)
ARTICLES = {
    "printer-jam": ("Clear a paper jam in the office printer", "printing",
                    "Open tray 2, pull the jammed paper out slowly, close the tray and the "
                    "printer starts printing again. A red blinking light means paper is stuck."),
    "vpn-password": ("Reset your VPN password", None,
                     "Go to https://vpn.example.org/reset, enter your user name and follow "
                     "the link we mail you. The new VPN password works after five minutes."),
    "wifi-guest": ("Guest Wi-Fi access for visitors", None,
                   "Visitors connect to the network GUEST and accept the terms; the guest "
                   "wifi needs no password."),
}


def write_kb(folder: Path, **extra: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for slug, (title, queue, body) in ARTICLES.items():
        queues = f"queues: [{queue}]\n" if queue else ""
        (folder / f"{slug}.md").write_text(
            f"---\ntitle: {title}\nstatus: published\n{queues}{extra.get(slug, '')}---\n"
            f"{body}\n\nMore:\n\n- one <script>alert(1)</script>\n- [help](https://help.test)\n")
    return folder


DESK = {"agents": [{"name": "bob", "address": "bob@desk.test", "queues": ["general",
                                                                         "printing"]}],
        "queues": [{"name": "general"}, {"name": "printing", "addresses": ["print@localhost"]},
                   {"name": "quiet", "addresses": ["quiet@localhost"], "suggest_articles": 0}],
        "addresses": ["support@localhost", "print@localhost", "quiet@localhost"]}


@pytest.fixture
def app(make_app: Callable[..., App], db_url: str, tmp_path: Path) -> App:
    return make_app(db_url, desk=DESK, kb={"folder": str(write_kb(tmp_path / "kb")),
                                           "threshold": 0.5})


def sent(app: App, template: str, to: str | None = None) -> list[EmailMessage]:
    with app.sessions() as s:
        query = select(OutboxMail).where(OutboxMail.template == template) \
            .order_by(OutboxMail.id)
        digests = [r.digest for r in s.scalars(query) if to is None or to in r.to]
    return [email.message_from_bytes(app.blobs.get(d), policy=policy.default)  # type: ignore[misc]
            for d in digests]


def text_of(msg: EmailMessage) -> str:
    return msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def solved_links(msg: EmailMessage) -> list[str]:
    return re.findall(r"support\+solved-[a-z0-9-]+@localhost|print\+solved-[a-z0-9-]+@localhost",
                      text_of(msg))


def new_ticket(app: App, subject: str, body: str, to: str = "support@localhost",
               n: int = 1, sender: str = "ana@customer.test") -> str:
    ingest(app, [(mail(subject=subject, body=body, to=to, sender=sender,
                       message_id=f"<k{n}@customer.test>"), PIPE)], now=MON)
    with app.sessions() as s:
        ref = s.scalars(select(Ticket.ref).order_by(Ticket.id.desc())).first()
    assert ref is not None
    return ref


def click(app: App, address: str, sender: str = "ana@customer.test", n: int = 0,
          **headers: str) -> str:
    extra = "".join(f"{k}: {v}\n" for k, v in headers.items())
    raw = (f"From: {sender}\nTo: {address}\nSubject: Solved\nMessage-ID: <c{n}@customer.test>"
           f"\n{extra}\n\n").encode()
    ingest(app, [(raw, Envelope("smtp", sender, (address,)))], now=MON + timedelta(hours=1))
    with app.sessions() as s:
        last = s.scalars(select(Inbound).order_by(Inbound.id.desc())).first()
        assert last is not None
        return f"{last.state}: {last.reason}"


def status(app: App, ref: str) -> str:
    with app.sessions() as s:
        return s.scalars(select(Ticket.status).where(Ticket.ref == ref)).one()


def suggestions(app: App, ref: str) -> list[tuple[str | None, int, bool]]:
    with app.sessions() as s:
        rows = s.scalars(select(KbSuggestion).join(Ticket, Ticket.id == KbSuggestion.ticket_id)
                         .where(Ticket.ref == ref).order_by(KbSuggestion.rank)).all()
        return [(r.slug, r.rank, r.solved_at is not None) for r in rows]


def test_the_acknowledgement_suggests_what_the_customer_asked_and_a_click_resolves(
        app: App) -> None:
    ref = new_ticket(app, "Forgot my VPN password", "I cannot log in to the vpn since "
                     "Monday, the password is refused.")
    ack = sent(app, "acknowledgement")[0]
    text = text_of(ack)
    assert "Reset your VPN password" in text and "vpn.example.org/reset" in text
    assert "Guest Wi-Fi" not in text or text.index("Reset your VPN") < text.index("Guest Wi-Fi")
    html = ack.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<script" not in html, "an article's HTML is made safe"
    assert 'href="mailto:support+solved-' in html and 'href="https://help.test"' in html
    assert suggestions(app, ref)[0][:2] == ("vpn-password", 1)
    notified = text_of(sent(app, "agent_notification", "bob@desk.test")[0])
    assert "Suggested to the customer: vpn-password" in notified

    link = solved_links(ack)[0]
    assert click(app, link).startswith("solved:")
    assert status(app, ref) == "resolved"
    assert suggestions(app, ref)[0] == ("vpn-password", 1, True)
    told = sent(app, "kb_solved", "bob@desk.test")
    assert len(told) == 1 and "vpn-password" in text_of(told[0])
    with app.sessions() as s:
        events = show_ticket(s, ref)["events"]  # type: ignore[index]
    change = next(e for e in events if e["kind"] == "ticket.updated"
                  and e["data"].get("new") == "resolved")
    assert change["data"]["resolved_by"] == "kb" and change["data"]["article"] == "vpn-password"
    assert click(app, link, n=1).startswith("solved:"), "a second click changes nothing"
    assert len(sent(app, "kb_solved")) == 1


def test_forged_stolen_and_automatic_clicks_change_nothing(app: App) -> None:
    ref = new_ticket(app, "VPN password expired", "The vpn password does not work.")
    other = new_ticket(app, "VPN password lost", "vpn password lost", n=2,
                       sender="eve@customer.test")
    link = solved_links(sent(app, "acknowledgement")[0])[0]
    forged = re.sub(r"-([a-z2-7])([a-z2-7]+)@",
                    lambda m: "-" + ("b" if m.group(1) != "b" else "c") + m.group(2) + "@",
                    link)
    assert click(app, forged).startswith("refused")
    stolen = link.replace(f"{ref.lower()}-", f"{other.lower()}-")
    assert click(app, stolen, sender="eve@customer.test", n=1).startswith("refused")
    auto = click(app, link, n=2, **{"Auto-Submitted": "auto-replied"})
    assert not auto.startswith("solved"), auto
    assert click(app, link, sender="mallory@evil.test", n=4).startswith("refused"), \
        "a forwarded link, or its address in another's mail, resolves nothing"
    unsuggested = re.sub(r"-1-([a-z2-7]+)@", r"-7-\1@", link)
    assert click(app, unsuggested, n=3).startswith("refused"), "no article at rank 7"
    assert status(app, ref) != "resolved" and status(app, other) != "resolved"


def test_nothing_good_enough_suggests_nothing_and_is_counted_as_a_gap(
        make_app: Callable[..., App], db_url: str, tmp_path: Path) -> None:
    app = make_app(db_url, desk=DESK, kb={"folder": str(write_kb(tmp_path / "kb")),
                                          "threshold": 2.0})
    ref = new_ticket(app, "Invoice 4411 is wrong", "Please send a corrected invoice.")
    text = text_of(sent(app, "acknowledgement")[0])
    assert "solved-" not in text and "may answer your question" not in text
    assert suggestions(app, ref) == [(None, 0, False)]


@pytest.mark.parametrize("how, expected", [
    ({}, 1),                                            # kb.suggest 1 below
    ({"queue": "quiet"}, 0),                            # the queue's suggest_articles: 0
    ({"rule": "suggest_articles: false"}, 0),
    ({"rule": "suggest_articles: 2"}, 2),
])
def test_rules_and_queues_decide_how_many(make_app: Callable[..., App], db_url: str,
                                          tmp_path: Path, how: dict[str, Any],
                                          expected: int) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: how-many\n    on: ticket.created\n"
                     f"    then:\n      - {how.get('rule', 'tags: {add: [seen]}')}\n")
    app = make_app(db_url, desk=DESK, rules=[str(rules)],
                   kb={"folder": str(write_kb(tmp_path / "kb")), "suggest": 1,
                       "threshold": 0.5})
    to = "quiet@localhost" if how.get("queue") else "support@localhost"
    ref = new_ticket(app, "VPN password and guest wifi password", "vpn password, guest wifi "
                     "password, printer", to=to)
    assert len(solved_links(sent(app, "acknowledgement")[0])) == expected
    assert len([s for s in suggestions(app, ref) if s[0]]) == expected


def test_an_article_for_a_queue_is_suggested_only_there(app: App) -> None:
    new_ticket(app, "Printer jam", "The printer is printing nothing, paper is stuck.")
    assert "Clear a paper jam" not in text_of(sent(app, "acknowledgement")[0])
    new_ticket(app, "Printer jam", "The printer is printing nothing, paper is stuck.",
               to="print@localhost", n=2)
    assert "Clear a paper jam" in text_of(sent(app, "acknowledgement")[1])


def test_a_desk_without_a_knowledge_base_acknowledges_as_before(
        make_app: Callable[..., App], db_url: str) -> None:
    app = make_app(db_url, desk=DESK)
    ref = new_ticket(app, "Forgot my VPN password", "vpn password")
    assert "may answer your question" not in text_of(sent(app, "acknowledgement")[0])
    assert suggestions(app, ref) == []


@pytest.mark.parametrize("action, problem", [
    ("suggest_articles: 11", "from 0 to 10"),
    ("suggest_articles: yes", "from 0 to 10"),
])
def test_a_bad_suggest_articles_is_named_at_its_line(tmp_path: Path, action: str,
                                                     problem: str) -> None:
    from maildesk.config.schema import Settings
    from maildesk.rules.load import RulesError, load
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"rules:\n  - name: r\n    on: ticket.created\n    then:\n      - {action}\n")
    with pytest.raises(RulesError) as e:
        load([rules], Settings().desk, set())
    assert e.value.problems[0].startswith(f"{rules}:5:") and problem in e.value.problems[0]


def test_suggest_articles_only_on_a_new_ticket(tmp_path: Path) -> None:
    from maildesk.config.schema import Settings
    from maildesk.rules.load import RulesError, load
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: r\n    on: customer.replied\n    then:\n"
                     "      - suggest_articles: 2\n")
    with pytest.raises(RulesError, match="only in a new ticket's acknowledgement"):
        load([rules], Settings().desk, set())


def test_the_report_counts_deflection_the_articles_and_the_gaps(
        make_app: Callable[..., App], db_url: str, tmp_path: Path) -> None:
    """Five new tickets: three offered the VPN article, two nothing (a gap). One requester
    clicks before anyone answered (deflected); another after bob answered (solved, but
    an agent was needed)."""
    from conftest import reply_address

    from maildesk.reports.metrics import build
    from maildesk.reports.render import as_html
    app = make_app(db_url, desk=DESK, kb={"folder": str(write_kb(tmp_path / "kb")),
                                          "threshold": 2.0})
    refs = [new_ticket(app, "VPN password refused", "my vpn password is refused", n=i,
                       sender=f"user{i}@customer.test") for i in range(3)]
    for i in range(2):
        new_ticket(app, "Invoice wrong", "please correct the invoice", n=10 + i)
    acks = sent(app, "acknowledgement")
    assert click(app, solved_links(acks[0])[0], sender="user0@customer.test") \
        .startswith("solved")
    to = reply_address(app, refs[1], "bob@desk.test")
    ingest(app, [(f"From: bob@desk.test\nTo: {to}\nSubject: Re: vpn\nMessage-ID: <b@desk.test>"
                  "\n\nTry the reset page.\n".encode(), PIPE)], now=MON + timedelta(minutes=5))
    assert click(app, solved_links(acks[1])[0], sender="user1@customer.test", n=1) \
        .startswith("solved")
    with app.engine.connect() as conn:
        r = build(conn, MON - timedelta(days=1), MON + timedelta(days=1), None)
    total = r.groups["all"]
    assert (total["kb_searched"], total["kb_suggested"], total["kb_solved"],
            total["kb_deflected"]) == (5, 3, 2, 1)
    assert total["kb_deflection_pct"] == 20.0, "1 of 5 new tickets"
    top = r.kb_articles[0]
    assert (top["slug"], top["suggested"], top["solved"]) == ("vpn-password", 3, 2)
    assert r.kb_gaps == [{"subject": "invoice wrong", "tickets": 2, "latest": "MD-5"}]
    assert r.kb_rewrite == [], "suggested 3 times, and it solved two"
    page = as_html(r, app.templates, "Desk")
    assert "20.0% of 5 new tickets deflected" in page and "invoice wrong" in page


def test_an_articles_html_keeps_text_and_absolute_links_only() -> None:
    from maildesk.kb.render import html
    out = html("[rel](/wiki/x) [ok](https://help.test/a) <img src=x onerror=alert(1)> "
               "[js](javascript:alert(1)) ![pic](https://evil.test/p.png)\n\n<script>x</script>")
    assert 'href="/wiki/x"' not in out and ">rel</a>" in out
    assert 'href="https://help.test/a"' in out
    assert "<img" not in out and "<script" not in out and 'href="javascript' not in out
