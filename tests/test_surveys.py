"""Satisfaction surveys by mail: one click (a mailto link) or a reply rates a resolved ticket;
forged and reused tokens are refused; nobody is asked who should not be."""
from __future__ import annotations

import email
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email import policy
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml
from conftest import Daemon, desk_key, mail, run_cli, wait_for
from sqlalchemy import select

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import ingest
from maildesk.store.models import Inbound, OutboxMail, Survey, Ticket
from maildesk.surveys.answer import parse_rating
from maildesk.surveys.send import send_surveys
from maildesk.tickets.refs import token_address
from maildesk.tickets.views import show_ticket

UTC = timezone.utc
MON = datetime(2026, 11, 16, 10, tzinfo=UTC)
DESK = {"agents": [{"name": "bob", "address": "bob@desk.test"}],
        "queues": [{"name": "general"}, {"name": "hr", "surveys": False}]}
PIPE = Envelope("pipe", None)


def resolved_ticket(app: App, n: int = 1, sender: str = "ana@customer.test",
                    when: datetime = MON) -> str:
    ingest(app, [(mail(subject=f"case {n}", sender=sender,
                       message_id=f"<s{n}@customer.test>"), PIPE)], now=when)
    with app.sessions() as s:
        ref = s.scalars(select(Ticket.ref).order_by(Ticket.id.desc())).first()
    assert ref is not None
    to = token_address(app.secrets[0], "support@localhost", ref, "bob@desk.test")
    raw = (f"From: bob@desk.test\nTo: {to}\nSubject: Re: [{ref}] case\n"
           f"Message-ID: <bob{n}@desk.test>\n\n#status resolved\nFixed.\n").encode()
    ingest(app, [(raw, PIPE)], now=when + timedelta(hours=1))
    return ref


def survey_mail(app: App, ref: str) -> email.message.EmailMessage:
    with app.sessions() as s:
        digest = s.scalars(select(OutboxMail.digest).join(Ticket).where(
            Ticket.ref == ref, OutboxMail.template == "survey")).one()
    return email.message_from_bytes(app.blobs.get(digest), policy=policy.default)  # type: ignore[return-value]


def links(msg: email.message.EmailMessage) -> dict[str, str]:
    """label -> rate address, from the text part's mailto links."""
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    return {m.group(1).split(" (")[0]: unquote(m.group(2))
            for m in re.finditer(r"^\s+(.+?): mailto:([^?\s]+)", text, re.MULTILINE)}


def click(app: App, address: str, sender: str = "ana@customer.test", body: str = "",
          n: int = 0, when: datetime = MON + timedelta(days=1)) -> str:
    raw = (f"From: {sender}\nTo: {address}\nSubject: rating\nMessage-ID: <r{n}@customer.test>"
           f"\n\n{body}\n").encode()
    ingest(app, [(raw, Envelope("smtp", sender, (address,)))], now=when)
    with app.sessions() as s:
        last = s.scalars(select(Inbound).order_by(Inbound.id.desc())).first()
        assert last is not None
        return f"{last.state}: {last.reason}"


def survey_row(app: App, ref: str) -> Survey | None:
    with app.sessions() as s:
        row = s.scalars(select(Survey).join(Ticket).where(Ticket.ref == ref)).first()
        s.expunge_all()
        return row


@pytest.fixture
def app(make_app: Callable[..., App], db_url: str) -> App:
    return make_app(db_url, desk=DESK)


def test_one_click_rates_and_forged_or_reused_tokens_are_refused(app: App) -> None:
    ref = resolved_ticket(app)
    assert send_surveys(app, MON + timedelta(minutes=30)) == "0 sent", "the delay: 1 h"
    assert send_surveys(app, MON + timedelta(hours=3)) == "1 sent"
    assert send_surveys(app, MON + timedelta(hours=4)) == "0 sent", "one per ticket"
    msg = survey_mail(app, ref)
    assert msg["Auto-Submitted"] == "auto-generated"
    choices = links(msg)
    assert list(choices) == ["Very satisfied", "Satisfied", "Neither", "Unsatisfied",
                             "Very unsatisfied", "No more surveys"]
    assert msg["Reply-To"].addresses[0].addr_spec.startswith("support+rate-md-1-")
    assert 'href="mailto:support+rate-md-1-5-' in msg.get_body(("html",)).get_content()

    forged = re.sub(r"-([a-z2-7])([a-z2-7]+)@", lambda m: "-" + ("b" if m.group(1) != "b"
                                                                   else "c") + m.group(2) + "@",
                    choices["Satisfied"])
    assert click(app, forged).startswith("refused")
    other = resolved_ticket(app, 2, sender="eve@customer.test")
    send_surveys(app, MON + timedelta(hours=5))
    stolen = choices["Very unsatisfied"].replace("md-1-", f"{other.lower()}-")
    assert click(app, stolen, sender="eve@customer.test").startswith("refused"), \
        "a token is good for its own ticket only"

    assert click(app, choices["Satisfied"], body="Thanks, quick and friendly.") \
        .startswith("rating")
    row = survey_row(app, ref)
    assert row is not None and (row.score, row.satisfied, row.comment) == (
        4, True, "Thanks, quick and friendly.")
    assert click(app, choices["Very unsatisfied"], n=1).startswith("refused"), "reused"
    assert survey_row(app, ref).score == 4  # type: ignore[union-attr]
    with app.sessions() as s:
        events = show_ticket(s, ref)["events"]  # type: ignore[index]
    answered = [e for e in events if e["kind"] == "survey.answered"]
    assert len(answered) == 1 and answered[0]["data"]["rating"] == 4


def test_a_reply_with_a_word_or_number_counts_and_a_vacation_reply_does_not(app: App) -> None:
    ref = resolved_ticket(app)
    send_surveys(app, MON + timedelta(hours=3))
    reply_to = survey_mail(app, ref)["Reply-To"].addresses[0].addr_spec
    vacation = (f"From: ana@customer.test\nTo: {reply_to}\nSubject: Automatic reply: survey\n"
                f"Auto-Submitted: auto-replied\nMessage-ID: <vac@customer.test>\n\n"
                f"I am away, 5 days.\n").encode()
    ingest(app, [(vacation, Envelope("smtp", "", (reply_to,)))], now=MON + timedelta(days=1))
    assert survey_row(app, ref).answered_at is None  # type: ignore[union-attr]
    assert click(app, reply_to, body="2 - it took a week\n\nOn Mon, you wrote:\n> How did we"
                 ).startswith("rating")
    row = survey_row(app, ref)
    assert row is not None and (row.score, row.comment) == (2, "it took a week")


def test_parse_rating_reads_numbers_and_words() -> None:
    assert parse_rating("5", "1-5").score == 5  # type: ignore[union-attr]
    assert parse_rating("  4/5 thanks", "1-5").score == 4  # type: ignore[union-attr]
    assert parse_rating("Excellent service!", "1-5").score == 5  # type: ignore[union-attr]
    assert parse_rating("bad", "good-bad").score == 1  # type: ignore[union-attr]
    assert parse_rating("good\nkeep it up", "good-bad").comment == "keep it up"  # type: ignore[union-attr]
    assert parse_rating("Can you also look at my phone?", "1-5") is None


def test_nobody_is_asked_who_should_not_be(make_app: Callable[..., App]) -> None:
    app = make_app(desk=DESK, surveys={"per_requester_days": 30})
    first = resolved_ticket(app, 1)
    second = resolved_ticket(app, 2)                                   # same requester
    assert send_surveys(app, MON + timedelta(hours=3)) == "1 sent", "one per requester"
    optout = links(survey_mail(app, first))["No more surveys"]
    assert click(app, optout).startswith("opted-out")
    third = resolved_ticket(app, 3, when=MON + timedelta(days=40))
    assert send_surveys(app, MON + timedelta(days=40, hours=3)) == "0 sent", "opted out"
    assert survey_row(app, second) is None and survey_row(app, third) is None
    hr = make_app(desk={**DESK, "queues": [{"name": "hr", "surveys": False}],
                        "default_queue": "hr"})
    resolved_ticket(hr, 1, sender="hr@customer.test")
    assert send_surveys(hr, MON + timedelta(hours=3)) == "0 sent", "the queue opted out"


def test_a_low_rating_runs_the_rules(make_app: Callable[..., App], tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump([{
        "name": "unhappy customer", "on": "survey.answered", "if": {"rating": {"lt": 3}},
        "then": [{"set": {"status": "open", "priority": "P2"}},
                 {"notify": {"template": "ticket_notice", "to": ["bob@desk.test"]}}]}]))
    app = make_app(desk=DESK, rules=[str(rules)])
    ref = resolved_ticket(app)
    send_surveys(app, MON + timedelta(hours=3))
    assert click(app, links(survey_mail(app, ref))["Very unsatisfied"]).startswith("rating")
    with app.sessions() as s:
        t = s.scalars(select(Ticket).where(Ticket.ref == ref)).one()
        assert (t.status, t.priority) == ("open", "P2")
        notices = s.scalars(select(OutboxMail.to).where(
            OutboxMail.template == "ticket_notice")).all()
    assert notices == [["bob@desk.test"]]


def test_survey_by_smtp_end_to_end(daemon: Callable[..., Daemon]) -> None:
    """The whole loop through a real daemon: mail in, resolved, survey out, click back in."""
    from test_smtp import send
    d: Daemon = daemon(desk=DESK, surveys={"delay": "0m"})
    send(d.port, mail(message_id="<e2e@customer.test>"))
    wait_for(lambda: run_cli("tickets", "show", "MD-1", config=d.config).returncode == 0,
             what="the ticket")
    secret = desk_key(d.config)
    to = token_address(secret, "support@localhost", "MD-1", "bob@desk.test")
    send(d.port, (f"From: bob@desk.test\nTo: {to}\nSubject: Re: [MD-1] Printer\n"
                  f"Message-ID: <bob@desk.test>\n\n#status resolved\nFixed.\n").encode(),
         rcpts=[to], sender="bob@desk.test")

    def surveyed() -> list[Path]:
        run_cli("jobs", "run", "surveys", "--force", config=d.config)
        folder = d.config.parent / "data" / "outbox" / "new"
        return [p for p in folder.iterdir() if b"How did we do?" in p.read_bytes()]
    (path,) = wait_for(surveyed, 30, "the survey in the outbox")
    msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    address = links(msg)["Very satisfied"]  # type: ignore[arg-type]
    send(d.port, mail(subject="Very satisfied (MD-1)", to=address), rcpts=[address])

    def rated() -> Any:
        shown = run_cli("tickets", "show", "MD-1", "--format", "json", config=d.config)
        import json
        return [e for e in json.loads(shown.stdout)["events"] if e["kind"] == "survey.answered"]
    (event,) = wait_for(rated, 30, "the rating")
    assert event["data"]["rating"] == 5 and event["data"]["via"] == "mail"
    time.sleep(0.1)


def test_web_links_confirm_on_get_and_record_on_post(make_app: Callable[..., App]) -> None:
    """Mail scanners open every link: a GET must change nothing."""
    import urllib.error
    import urllib.request

    from conftest import free_port

    from maildesk.surveys.web import rating_server
    port = free_port()
    app = make_app(desk=DESK, surveys={"web": {"enabled": True, "port": port,
                                               "base_url": f"http://127.0.0.1:{port}/r"}})
    ref = resolved_ticket(app)
    send_surveys(app, MON + timedelta(hours=3))
    text = survey_mail(app, ref).get_body(("plain",)).get_content()  # type: ignore[union-attr]
    url = re.search(r"Satisfied \(4\): (http://\S+)", text).group(1)  # type: ignore[union-attr]
    server = rating_server(app)
    server.start()
    try:
        page = urllib.request.urlopen(url, timeout=10)
        assert b"Your rating for MD-1: Satisfied." in page.read()
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        assert survey_row(app, ref).answered_at is None  # type: ignore[union-attr]
        done = urllib.request.urlopen(url, data=b"comment=Nice+work",
                                      timeout=10)
        assert b"Thank you" in done.read()
        row = survey_row(app, ref)
        assert row is not None and (row.score, row.comment) == (4, "Nice work")
        for bad, code in ((url, 409),
                          (url[:-3] + "aaa", 403)):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(bad, data=b"comment=again", timeout=10)
            assert e.value.code == code
    finally:
        server.shutdown()


def test_jobs_run_surveys_force_skips_the_delay_too(app: App) -> None:
    """`jobs run surveys --force` is for an operator who wants the surveys out now: the
    survey delay is a wait like the job's interval, and --force skips both."""
    from maildesk.scheduler.jobs import jobs_for, run_job
    ref = resolved_ticket(app)
    (job,) = [j for j in jobs_for(app) if j.name == "surveys"]
    early = MON + timedelta(hours=1, minutes=30)   # resolved at 1 h; the delay is 1 h
    assert run_job(app, job, early) == "0 sent"
    assert run_job(app, job, early + timedelta(minutes=1)) is None, "the interval"
    assert run_job(app, job, early + timedelta(minutes=1), force=True) == "1 sent"
    assert survey_row(app, ref) is not None
