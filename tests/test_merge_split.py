"""`#merge` and `#split` through the real pipeline (issue 20): a merge carries the merged
ticket's people to the survivor, and every way a mail names the merged ticket (its reply
addresses, its tag, the Message-IDs of its mail) lands on the survivor; `#split` makes a
ticket of one customer's message."""
from __future__ import annotations

import email
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import test_first_day as first  # its Desk and mail helpers
import yaml
from conftest import Daemon, mail, reply_address, run_cli, settings_dict, wait_for
from sqlalchemy import func, select

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import ingest
from maildesk.store.models import OutboxMail, Ticket
from maildesk.tickets.views import show_ticket

DESK = {"queues": [{"name": "general", "group": "helpdesk"}],
        "agents": [{"name": "bob", "address": "bob@desk.test", "groups": ["helpdesk"]},
                   {"name": "lea", "address": "lea@desk.test", "groups": ["helpdesk"]}],
        "groups": [{"name": "helpdesk"}]}
PIPE = Envelope("pipe", None)
ANA, CY, DI = "ana@customer.test", "cy@customer.test", "di@other.test"


@pytest.fixture
def app(make_app: Callable[..., App], db_url: str) -> App:
    return make_app(db_url, desk=DESK)


def show(app: App, ref: str) -> dict[str, Any]:
    with app.sessions() as s:
        t = show_ticket(s, ref)
    assert t is not None
    return t


def tickets(app: App) -> int:
    with app.sessions() as s:
        return int(s.scalar(select(func.count(Ticket.id))) or 0)


def sent(app: App, ref: str) -> list[EmailMessage]:
    with app.sessions() as s:
        digests = s.scalars(select(OutboxMail.digest).join(Ticket)
                            .where(Ticket.ref == ref).order_by(OutboxMail.id)).all()
    return [email.message_from_bytes(app.blobs.get(d), policy=policy.default)  # type: ignore[misc]
            for d in digests]


def to(m: EmailMessage) -> list[str]:
    return [a.addr_spec for h in ("To", "Cc") for a in (m[h].addresses if m[h] else ())]


def agent_mail(ref: str, body: str, app: App, agent: str = "bob", **headers: str) -> bytes:
    m = EmailMessage()
    m["From"] = f"{agent.title()} <{agent}@desk.test>"
    m["To"] = reply_address(app, ref, f"{agent}@desk.test")
    m["Subject"] = f"Re: [{ref}] a ticket"
    m["Message-ID"] = f"<{agent}.{abs(hash((ref, body, *headers.values())))}@desk.test>"
    for k, v in headers.items():
        m[k.replace("_", "-")] = v
    m.set_content(body)
    return m.as_bytes()


def as_agent(app: App, ref: str, body: str, **headers: str) -> None:
    ingest(app, [(agent_mail(ref, body, app, **headers), PIPE)])


def merged(app: App) -> None:
    """MD-1 by ana, MD-2 by cy (di in Cc), and MD-2 merged into MD-1."""
    ingest(app, [(mail(message_id="<a1@customer.test>"), PIPE)])
    ingest(app, [(mail(subject="Printer still jammed", sender=f"Cy Rao <{CY}>",
                       Cc=f"Di <{DI}>", message_id="<c1@customer.test>"), PIPE)])
    as_agent(app, "MD-2", "#merge MD-1\n")
    assert show(app, "MD-2")["status"] == "closed"


def customer_reply(app: App, sender: str, text: str, to: str = "support@localhost",
                   subject: str = "Re: Printer still jammed", **headers: str) -> None:
    ingest(app, [(mail(subject=subject, body=text, sender=sender, to=to, **headers), PIPE)])


def landed(app: App, text: str) -> dict[str, Any]:
    """The message with text, on MD-1, and nowhere else: no new ticket."""
    assert tickets(app) == 2, "a new ticket was opened"
    one = show(app, "MD-1")
    mine = [m for m in one["messages"] if m["text"] == text]
    assert len(mine) == 1, [m["text"] for m in one["messages"]]
    return mine[0]


# -- #merge ---------------------------------------------------------------------------

def test_merge_makes_the_merged_people_participants_of_the_survivor(app: App) -> None:
    merged(app)
    one = show(app, "MD-1")
    assert one["requester"] == ANA
    assert one["cc"] == [CY, DI]
    absorbed = [e for e in one["events"] if e["kind"] == "ticket.merged"][0]["data"]
    assert absorbed["absorbed"] == "MD-2" and absorbed["cc_added"] == [CY, DI]
    assert absorbed["requester_name"] == "Cy Rao"


def test_the_merged_requesters_reply_to_their_reply_address_lands_on_the_survivor(
        app: App) -> None:
    merged(app)
    customer_reply(app, f"Cy <{CY}>", "It works now, thanks.", to=reply_address(app, "MD-2", CY))
    m = landed(app, "It works now, thanks.")
    assert m["proof"] == "token", "their own reply address proves them on the survivor"
    one = show(app, "MD-1")
    replied = [e for e in one["events"] if e["kind"] == "customer.replied"][-1]["data"]
    assert replied["sender_verified"] is True and replied["merged_from"] == "MD-2"
    assert show(app, "MD-2")["status"] == "closed", "the merged ticket is not reopened"
    assert one["status"] != "closed"


def test_a_tag_of_the_merged_ticket_from_its_people_lands_on_the_survivor(app: App) -> None:
    merged(app)
    customer_reply(app, f"Di <{DI}>", "Same here.", subject="Re: [MD-2] Printer")
    customer_reply(app, f"Cy <{CY}>", "And again.", subject="[MD-2] printer")
    landed(app, "Same here.")
    landed(app, "And again.")
    customer_reply(app, "Eve <eve@evil.test>", "Let me in.", subject="Re: [MD-2] Printer")
    assert tickets(app) == 3, "a stranger typing the merged ticket's tag joins nothing"
    assert "eve@evil.test" not in show(app, "MD-1")["cc"]


def test_in_reply_to_the_merged_tickets_acknowledgement_lands_on_the_survivor(
        app: App) -> None:
    ingest(app, [(mail(message_id="<a1@customer.test>"), PIPE)])
    ingest(app, [(mail(subject="Printer still jammed", sender=f"Cy Rao <{CY}>",
                       message_id="<c1@customer.test>"), PIPE)])
    ack = [m for m in sent(app, "MD-2") if to(m) == [CY]][0]
    as_agent(app, "MD-2", "#merge MD-1\n")
    customer_reply(app, f"Cy <{CY}>", "Any news?", In_Reply_To=ack["Message-ID"],
                   References=f"<c1@customer.test> {ack['Message-ID']}")
    landed(app, "Any news?")
    one = show(app, "MD-1")
    assert CY in one["cc"], "cy is on MD-1 now"
    replied = [e for e in one["events"] if e["kind"] == "customer.replied"][-1]["data"]
    assert replied["thread_by"] == "references"   # its messages moved with the merge


def test_a_reply_to_mail_the_merged_ticket_answered_first_lands_on_the_survivor(
        app: App) -> None:
    """by_replies: the reply came first (an import out of order), then the merge."""
    ingest(app, [(mail(message_id="<a1@customer.test>"), PIPE)])
    ingest(app, [(mail(subject="Re: printer", sender=f"Cy <{CY}>",
                       message_id="<c2@customer.test>", In_Reply_To="<c1@customer.test>"),
                  PIPE)])
    as_agent(app, "MD-2", "#merge MD-1\n")
    customer_reply(app, f"Cy <{CY}>", "The first one.", message_id="<c1@customer.test>",
                   subject="printer")
    landed(app, "The first one.")


def test_agent_replies_on_the_survivor_reach_the_merged_people(app: App) -> None:
    merged(app)
    as_agent(app, "MD-1", "Tray 2 is fixed.\n")
    out = sent(app, "MD-1")[-1]
    assert to(out) == [ANA, CY, DI]
    assert "Tray 2 is fixed." in out.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_an_agents_reply_to_a_merged_tickets_notification_goes_to_the_survivor(
        app: App) -> None:
    merged(app)
    as_agent(app, "MD-2", "#priority P2\nLooking into it.\n")
    one = show(app, "MD-1")
    assert one["priority"] == "P2" and show(app, "MD-2")["priority"] != "P2"
    assert any(m["text"] == "Looking into it." for m in one["messages"])
    assert to(sent(app, "MD-1")[-1]) == [ANA, CY, DI]


def test_merged_chains_are_followed_to_the_last_survivor(app: App) -> None:
    merged(app)     # MD-2 into MD-1
    ingest(app, [(mail(subject="Third", sender="Fay <fay@customer.test>"), PIPE)])
    as_agent(app, "MD-1", "#merge MD-3\n")
    assert show(app, "MD-3")["cc"] == [ANA, CY, DI]
    customer_reply(app, f"Cy <{CY}>", "Chained.", to=reply_address(app, "MD-2", CY))
    customer_reply(app, f"Di <{DI}>", "Tagged.", subject="Re: [MD-2] x")
    assert tickets(app) == 3
    texts = [m["text"] for m in show(app, "MD-3")["messages"]]
    assert "Chained." in texts and "Tagged." in texts and "It blinks red." in texts


def test_a_ticket_that_follows_a_closed_one_is_no_merge(app: App) -> None:
    """A reply to a merged ticket whose survivor is closed is what the survivor's queue
    says (on_closed_reply: new, a ticket linked to it); and linked_to alone is no merge:
    the reply to that new ticket once closed does not go on to the one it follows."""
    merged(app)     # MD-2 into MD-1
    as_agent(app, "MD-1", "#status closed\n")
    customer_reply(app, f"Cy <{CY}>", "Still broken.", to=reply_address(app, "MD-2", CY))
    assert tickets(app) == 3 and show(app, "MD-3")["linked_to"] == "MD-1"
    as_agent(app, "MD-3", "#status closed\n")
    customer_reply(app, f"Cy <{CY}>", "Once more.", to=reply_address(app, "MD-3", CY))
    assert tickets(app) == 4 and show(app, "MD-4")["linked_to"] == "MD-3"


def test_merging_into_a_merged_ticket_merges_into_its_survivor(app: App) -> None:
    merged(app)     # MD-2 into MD-1
    ingest(app, [(mail(subject="Third", sender="Fay <fay@customer.test>"), PIPE)])
    as_agent(app, "MD-3", "#merge MD-2\n")
    three = show(app, "MD-3")
    assert three["status"] == "closed" and three["linked_to"] == "MD-1"
    assert "fay@customer.test" in show(app, "MD-1")["cc"]


def test_merging_a_ticket_into_what_it_absorbed_is_refused(app: App) -> None:
    merged(app)     # MD-2 into MD-1
    as_agent(app, "MD-1", "#merge MD-2\n")
    one = show(app, "MD-1")
    assert one["status"] != "closed"
    refused = [e for e in one["events"] if e["kind"] == "commands.refused"][-1]["data"]
    assert refused["errors"] == ["#merge MD-2: it was merged into MD-1 already"]


# -- #split ---------------------------------------------------------------------------

def notification_of(app: App, ref: str, text: str) -> EmailMessage:
    """Bob's notification of the customer's message with text on ticket ref."""
    return [m for m in sent(app, ref) if to(m) == ["bob@desk.test"]
            and text in m.get_body(("plain",)).get_content()][-1]  # type: ignore[union-attr]


def two_on_one(app: App) -> EmailMessage:
    """MD-1 by ana; cy writes on it too (Message-ID <c2@...>, with a file); bob's notice of
    cy's mail."""
    ingest(app, [(mail(message_id="<a1@customer.test>"), PIPE)])
    m = EmailMessage()
    m["From"] = f"Cy Rao <{CY}>"
    m["To"] = reply_address(app, "MD-1", ANA)       # ana's relayed reply address, answered
    m["Cc"] = ANA
    m["Subject"] = "Re: [MD-1] Printer on floor 2 is jammed"
    m["Message-ID"] = "<c2@customer.test>"
    m["In-Reply-To"] = "<a1@customer.test>"
    m.set_content("My scanner is broken too, another matter.\n")
    m.add_attachment(b"scan log", maintype="text", subtype="plain", filename="scan.log")
    as_agent(app, "MD-1", "#cc +cy@customer.test\n")
    ingest(app, [(m.as_bytes(), PIPE)])
    assert tickets(app) == 1
    return notification_of(app, "MD-1", "My scanner is broken too")


def test_split_makes_a_ticket_of_the_answered_message(app: App) -> None:
    notice = two_on_one(app)
    as_agent(app, "MD-1", "#split\n", In_Reply_To=notice["Message-ID"],
             References=f"<c2@customer.test> {notice['Message-ID']}")
    assert tickets(app) == 2
    one, two = show(app, "MD-1"), show(app, "MD-2")
    assert "<c2@customer.test>" not in [m["message_id"] for m in one["messages"]]
    moved = [m for m in two["messages"] if m["message_id"] == "<c2@customer.test>"]
    assert moved and [a["filename"] for a in moved[0]["attachments"]] == ["scan.log"]
    assert (two["requester"], two["subject"], two["linked_to"], two["queue"]) == \
        (CY, "Printer on floor 2 is jammed", "MD-1", "general")
    assert [e["data"]["into"] for e in one["events"] if e["kind"] == "ticket.split"] == ["MD-2"]
    assert [e["data"]["split_from"] for e in two["events"]
            if e["kind"] == "ticket.split"] == ["MD-1"]
    told = [m for m in sent(app, "MD-2") if to(m) == ["bob@desk.test"]]
    assert told and told[-1]["Subject"].startswith("[MD-2] Split off MD-1:"), \
        [m["Subject"] for m in told]
    assert reply_address(app, "MD-2", "bob@desk.test") in str(told[-1]["Reply-To"])
    # bob answers the new ticket: cy alone hears it
    as_agent(app, "MD-2", "Try the other scanner.\n")
    assert to(sent(app, "MD-2")[-1]) == [CY]


def test_split_answering_only_the_notification_finds_the_message_it_relayed(
        app: App) -> None:
    """Clients that answer with In-Reply-To alone (or trim References) name only our
    notification: the message it relayed is found in its stored headers."""
    notice = two_on_one(app)
    as_agent(app, "MD-1", "#split\n", In_Reply_To=notice["Message-ID"])
    assert tickets(app) == 2 and show(app, "MD-2")["requester"] == CY
    assert "<c2@customer.test>" in [m["message_id"] for m in show(app, "MD-2")["messages"]]


def test_split_by_message_id(app: App) -> None:
    two_on_one(app)
    as_agent(app, "MD-1", "#split <c2@customer.test>\n")
    assert tickets(app) == 2 and show(app, "MD-2")["requester"] == CY


@pytest.mark.parametrize(("line", "headers", "error"), [
    ("#split", {}, "#split: this mail answers no customer's message of MD-1"),
    ("#split <a1@customer.test>", {}, "#split <a1@customer.test>: <a1@customer.test> "
                                      "opened MD-1; split off a later message"),
    ("#split", {"In_Reply_To": "<a1@customer.test>"}, "opened MD-1"),
    ("#split <nope@x.test>", {}, "#split <nope@x.test>: no message of MD-1 has that "
                                 "Message-ID"),
    ("#split nothing", {}, "'nothing' is not a Message-ID"),
    ("#split <c2@customer.test>\n#merge MD-9", {}, "#split and #merge in one mail"),
])
def test_split_refusals_change_nothing(app: App, line: str, headers: dict[str, str],
                                       error: str) -> None:
    two_on_one(app)
    as_agent(app, "MD-1", f"{line}\n", **headers)
    assert tickets(app) == 1
    one = show(app, "MD-1")
    assert "<c2@customer.test>" in [m["message_id"] for m in one["messages"]]
    refused = [e for e in one["events"] if e["kind"] == "commands.refused"][-1]["data"]
    assert any(error in e for e in refused["errors"]), refused["errors"]


# -- end to end: a real `maildesk serve`, real SMTP, the outbox maildir ----------------------

def test_a_merged_requesters_reply_lands_on_the_survivor(
        daemon: Callable[..., Daemon]) -> None:
    d = daemon(desk={"agents": first.AGENTS, "ack_window": 3600, "ack_limit": 10})
    desk, bob = first.Desk(d), first.BOB
    desk.send(ANA, "support@localhost", first.a_mail(ANA, "support@localhost",
                                                     "Printer jammed", "Floor 2."))
    desk.next_mail(bob, "the notice of MD-1")
    desk.next_mail(ANA, "ana's acknowledgement")
    desk.send(CY, "support@localhost", first.a_mail(CY, "support@localhost",
                                                    "Printer on floor 2", "Jammed here too."))
    ack = desk.next_mail(CY, "cy's acknowledgement")
    notice = desk.next_mail(bob, "the notice of MD-2")
    assert "[MD-2]" in ack["Subject"] and "[MD-2]" in notice["Subject"]
    desk.send(bob, first.reply_to(notice), first.a_mail(
        bob, first.reply_to(notice), "Re: " + notice["Subject"], "#merge MD-1\n",
        answering=notice))
    wait_for(lambda: b"closed" in first.run_cli("tickets", "show", "MD-2",
                                                config=d.config).stdout, 60, "the merge")
    # cy answers her acknowledgement, as her mail client does
    desk.send(CY, first.reply_to(ack), first.a_mail(CY, first.reply_to(ack),
                                                    "Re: " + ack["Subject"],
                                                    "Still jammed, all trays.",
                                                    answering=ack))
    heard = desk.next_mail(bob, "cy's reply, as bob hears of it")
    assert heard["Subject"].startswith("[MD-1] Reply:"), heard["Subject"]
    assert "Still jammed, all trays." in first.text(heard)
    assert "SENDER NOT VERIFIED" not in first.text(heard), "her reply address proves her"
    desk.send(bob, first.reply_to(heard), first.a_mail(
        bob, first.reply_to(heard), "Re: " + heard["Subject"], "A technician is on the way.",
        answering=heard))
    relayed = desk.next_mail(ANA, "bob's answer on MD-1")
    assert "[MD-1]" in relayed["Subject"]
    assert [a.addr_spec for a in relayed["Cc"].addresses] == [CY]
    listed = first.run_cli("tickets", "list", config=d.config).stdout.decode()
    assert "MD-3" not in listed, listed
    assert d.stop() == 0


def test_tickets_split_on_the_command_line(app: App, tmp_path: Path) -> None:
    two_on_one(app)
    cfg = tmp_path / "maildesk.yaml"
    cfg.write_text(yaml.safe_dump(settings_dict(tmp_path, app.settings.database_url,
                                                desk=DESK)))
    r = run_cli("tickets", "split", "MD-1", "<c2@customer.test>", "--as", "bob", config=cfg)
    assert r.returncode == 0, r.stderr
    assert b"MD-1: <c2@customer.test> split off into MD-2" in r.stdout, r.stdout
    assert show(app, "MD-2")["requester"] == CY
    r = run_cli("tickets", "split", "MD-1", "<a1@customer.test>", "--as", "bob", config=cfg)
    assert (r.returncode, r.stderr.strip()) == (66, b"maildesk: #split <a1@customer.test>: "
                                                    b"<a1@customer.test> opened MD-1; split "
                                                    b"off a later message"), r.stderr
