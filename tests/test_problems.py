"""Problem records (issue 20): problem tickets with a root cause, a workaround and a
known-error flag; incidents linked to them by mail, by the command line and by rules; a
known error's workaround reaching the linked incidents' requesters; a resolved problem
resolving its open incidents. Through the real pipeline on SQLite and PostgreSQL."""
from __future__ import annotations

import email
import json
import re
import textwrap
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import mail, run_cli
from sqlalchemy import select

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import ingest
from maildesk.store.models import OutboxMail, Ticket
from maildesk.tickets.refs import token_address
from maildesk.tickets.views import show_ticket

DESK = {"queues": [{"name": "general", "group": "helpdesk"},
                   {"name": "lab", "group": "helpdesk", "addresses": ["lab@localhost"],
                    "resolve_with_problem": False}],
        "addresses": ["support@localhost", "lab@localhost"],
        "agents": [{"name": "bob", "address": "bob@desk.test", "groups": ["helpdesk"]},
                   {"name": "lea", "address": "lea@desk.test", "groups": ["helpdesk"]}],
        "groups": [{"name": "helpdesk"}]}
PIPE = Envelope("pipe", None)
ANA, CY, DEE = "ana@customer.test", "cy@customer.test", "dee@customer.test"


@pytest.fixture
def app(make_app: Callable[..., App], db_url: str) -> App:
    return make_app(db_url, desk=DESK)


def show(app: App, ref: str) -> dict[str, Any]:
    with app.sessions() as s:
        t = show_ticket(s, ref)
    assert t is not None
    return t


def sent(app: App, template: str) -> list[tuple[str, list[str], EmailMessage]]:
    """The outbox's mail of a template, in order: (ticket, recipients, the mail)."""
    with app.sessions() as s:
        rows = s.execute(select(Ticket.ref, OutboxMail.to, OutboxMail.digest).join(Ticket)
                         .where(OutboxMail.template == template).order_by(OutboxMail.id)).all()
    return [(ref, list(to), email.message_from_bytes(app.blobs.get(d),  # type: ignore[arg-type]
                                                     policy=policy.default))
            for ref, to, d in rows]


def text(m: EmailMessage) -> str:
    return str(m.get_body(("plain",)).get_content())  # type: ignore[union-attr]


def by_agent(app: App, ref: str, body: str, agent: str = "bob") -> None:
    """An agent's mail on ticket ref, to the reply address the desk gave them."""
    to = token_address(app.secrets[0], "support@localhost" if ref != "lab" else "lab@localhost",
                       ref, f"{agent}@desk.test")
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = f"{agent}@desk.test", to, f"Re: [{ref}] x"
    m["Message-ID"] = f"<{agent}.{abs(hash((ref, body)))}@desk.test>"
    m.set_content(body)
    ingest(app, [(m.as_bytes(), PIPE)])


def three_customers(app: App) -> None:
    """MD-1 ana's, MD-2 cy's, MD-3 dee's: the same printer."""
    for who, subject in ((ANA, "Printer jammed"), (CY, "printer again"), (DEE, "no prints")):
        ingest(app, [(mail(subject=subject, sender=who), PIPE)])


def kinds(app: App, ref: str) -> list[str]:
    return [e["kind"] for e in show(app, ref)["events"]]


def test_problem_new_opens_a_problem_and_links_the_incident(app: App) -> None:
    three_customers(app)
    by_agent(app, "MD-1", "#problem new\n")
    p = show(app, "MD-4")
    assert (p["type"], p["subject"], p["queue"], p["assignee"], p["status"]) == \
        ("problem", "Printer jammed", "general", "bob", "open")
    assert show(app, "MD-1")["problem"] == "MD-4"
    by_agent(app, "MD-2", "#problem md-4\n", agent="lea")
    assert show(app, "MD-2")["problem"] == "MD-4"
    assert any(e["kind"] == "ticket.updated" and e["data"]["field"] == "problem"
               and e["actor"] == "agent:lea" for e in show(app, "MD-2")["events"])
    assert not [m for _r, to, m in sent(app, "acknowledgement") if "bob@desk.test" in to], \
        "the agent who opened the problem is acknowledged nothing"
    told = [(to, m) for ref, to, m in sent(app, "agent_notification") if ref == "MD-4"]
    assert [to for to, _m in told] == [["bob@desk.test"]], "but told where to write its record"
    body = text(told[0][1])
    assert "New problem MD-4" in body and "Its incident: MD-1" in body and "#workaround" in body
    assert told[0][1]["Reply-To"].addresses[0].addr_spec == token_address(
        app.secrets[0], "support@localhost", "MD-4", "bob@desk.test")
    by_agent(app, "MD-4", "#root-cause Fuser firmware.\nThe vendor has a fix.\n")
    p = show(app, "MD-4")
    assert (p["root_cause"], p["status"]) == ("Fuser firmware.", "open")
    assert p["messages"][-1]["visibility"] == "internal", "a problem's words are a note"
    assert not [r for r, _t, _m in sent(app, "agent_reply") if r == "MD-4"]


@pytest.mark.parametrize("ref, body, said", [
    ("MD-2", "#problem MD-1\n", "#problem MD-1: it is a ticket of type incident, not a problem"),
    ("MD-2", "#problem MD-99\n", "#problem MD-99: no such ticket"),
    ("MD-2", "#problem soon\n", "#problem takes new, none or a problem's reference"),
    ("MD-2", "#workaround Use tray 1.\n", "#workaround: MD-2 is no problem ticket"),
    ("MD-3", "#problem new\n", "#problem: MD-3 is a problem ticket"),
    ("MD-3", "#known-error\n", "#known-error: a known error needs its workaround"),
])
def test_problem_commands_that_cannot_be_are_refused_whole(app: App, ref: str, body: str,
                                                           said: str) -> None:
    ingest(app, [(mail(sender=ANA), PIPE), (mail(sender=CY), PIPE)])
    by_agent(app, "MD-1", "#problem new\n")                       # MD-3: the problem
    by_agent(app, ref, "#assign me\n" + body)
    t = show(app, ref)
    assert t["assignee"] != "bob" or ref == "MD-3"
    assert t["events"][-1]["kind"] == "notification.queued"
    assert "commands.refused" in kinds(app, ref)
    assert not show(app, "MD-3")["known_error"]
    error = sent(app, "command_error")[-1]
    assert error[1] == ["bob@desk.test"] and said in text(error[2])
    for command in ("#problem new|REF|none", "#root-cause TEXT", "#workaround TEXT",
                    "#known-error [off]", "#split"):
        assert command in text(error[2]), f"the help lists {command}"


def test_a_known_errors_workaround_reaches_the_open_linked_incidents_only(app: App) -> None:
    three_customers(app)                              # MD-3: dee's, never linked
    ingest(app, [(mail(subject="printer, closed", sender="eve@customer.test"), PIPE)])
    by_agent(app, "MD-1", "#problem new\n")           # MD-5
    by_agent(app, "MD-2", "#problem MD-5\n")
    by_agent(app, "MD-4", "#problem MD-5\n#status closed\n")
    assert sent(app, "known_error") == [], "no known error yet"
    by_agent(app, "MD-5", "#root-cause The fuser's firmware 2.1.\n"
                          "#known-error\n#workaround Print from tray 1 until Friday.\n")
    p = show(app, "MD-5")
    assert (p["root_cause"], p["workaround"], p["known_error"]) == \
        ("The fuser's firmware 2.1.", "Print from tray 1 until Friday.", True)
    told = sent(app, "known_error")
    assert [(ref, to) for ref, to, _m in told] == [("MD-1", [ANA]), ("MD-2", [CY])]
    assert all("Print from tray 1 until Friday." in text(m) for _r, _t, m in told)
    assert told[0][2]["Reply-To"].addresses[0].addr_spec == token_address(
        app.secrets[0], "support@localhost", "MD-1", ANA), "answers go to the incident"
    event = next(e for e in show(app, "MD-1")["events"] if e["kind"] == "problem.known_error")
    assert (event["actor"], event["data"]["problem"]) == ("problem:MD-5", "MD-5")

    by_agent(app, "MD-5", "#workaround Print from tray 1, or use floor 3.\n")
    assert [ref for ref, _to, _m in sent(app, "known_error")[2:]] == ["MD-1", "MD-2"]
    by_agent(app, "MD-3", "#problem MD-5\n")           # linked later: told at once
    late = sent(app, "known_error")[-1]
    assert (late[0], late[1]) == ("MD-3", [DEE])
    assert "or use floor 3" in text(late[2])


def test_resolving_the_problem_resolves_and_tells_its_open_incidents(app: App) -> None:
    three_customers(app)
    ingest(app, [(mail(subject="lab printer", sender="eve@customer.test",
                       to="lab@localhost"), PIPE)])   # MD-4, in the lab queue: left alone
    by_agent(app, "MD-1", "#problem new\n")           # MD-5
    for ref in ("MD-2", "MD-4"):
        by_agent(app, ref, "#problem MD-5\n")
    by_agent(app, "MD-2", "#status pending\n#silent\n")
    by_agent(app, "MD-5", "#status resolved\n")
    for ref in ("MD-1", "MD-2"):
        t = show(app, ref)
        assert (t["status"], t["resolved_by"]) == ("resolved", "MD-5")
        resolved = next(e for e in t["events"] if e["kind"] == "ticket.resolved")
        assert resolved["actor"] == "problem:MD-5"
    assert (show(app, "MD-3")["status"], show(app, "MD-3")["resolved_by"]) == ("new", None)
    assert (show(app, "MD-4")["status"], show(app, "MD-4")["resolved_by"]) == ("new", None)
    told = sent(app, "problem_resolved")
    assert [(ref, to) for ref, to, _m in told] == [("MD-1", [ANA]), ("MD-2", [CY])]
    assert "has been fixed" in text(told[0][2])
    record = next(e for e in show(app, "MD-5")["events"] if e["kind"] == "problem.resolved")
    assert (record["data"]["resolved"], record["data"]["left"]) == (["MD-1", "MD-2"], ["MD-4"])
    by_agent(app, "MD-3", "#problem MD-5\n")          # linked to a problem already fixed
    assert (show(app, "MD-3")["status"], show(app, "MD-3")["resolved_by"]) == \
        ("resolved", "MD-5")
    assert [ref for ref, _to, _m in sent(app, "problem_resolved")] == ["MD-1", "MD-2", "MD-3"]


@pytest.mark.parametrize("ref, body, said", [
    ("MD-4", "#merge MD-1\n", "#merge MD-1: MD-4 is a problem and MD-1 is not; a problem "
                              "merges only into a problem"),
    ("MD-2", "#merge MD-4\n", "#merge MD-4: MD-4 is a problem; link MD-2 to it with "
                              "#problem MD-4 instead"),
    ("MD-2", "#merge MD-2\n", "#merge MD-2: a ticket cannot be merged into itself"),
])
def test_a_problem_and_an_incident_never_merge(app: App, ref: str, body: str, said: str,
                                               desk_config: Callable[..., Path],
                                               db_url: str) -> None:
    """Merged either way, a customer's ticket would hold the problem's record and
    incidents, or the customer would be CC'd on what the desk writes about the cause."""
    three_customers(app)
    by_agent(app, "MD-1", "#problem new\n")                       # MD-4
    by_agent(app, ref, body)
    assert "commands.refused" in kinds(app, ref) and "ticket.merged" not in kinds(app, ref)
    assert show(app, "MD-4")["status"] == "open" and show(app, "MD-4")["cc"] == []
    assert said in text(sent(app, "command_error")[-1][2])
    r = run_cli("tickets", "merge", "MD-4", "MD-1", "--as", "bob",
                config=desk_config(db_url, desk=DESK))
    assert r.returncode == 64 and b"a problem merges only into a problem" in r.stderr


def test_a_problem_merged_into_another_hands_over_its_incidents(app: App) -> None:
    three_customers(app)
    by_agent(app, "MD-1", "#problem new\n")                       # MD-4
    by_agent(app, "MD-2", "#problem new\n")                       # MD-5
    by_agent(app, "MD-5", "#merge MD-4\n")
    assert (show(app, "MD-5")["status"], show(app, "MD-2")["problem"]) == ("closed", "MD-4")
    assert show(app, "MD-2")["status"] == "new", "a merge resolves no incident"
    by_agent(app, "MD-3", "#problem MD-5\n")
    assert show(app, "MD-3")["problem"] is None
    assert "#problem MD-5: it was merged into MD-4; #problem MD-4 links to where it went" in \
        text(sent(app, "command_error")[-1][2])
    by_agent(app, "MD-4", "#status resolved\n")
    assert [show(app, r)["resolved_by"] for r in ("MD-1", "MD-2", "MD-3")] == \
        ["MD-4", "MD-4", None]


def test_closing_an_open_problem_resolves_its_incidents_as_resolving_does(app: App) -> None:
    three_customers(app)
    by_agent(app, "MD-1", "#problem new\n")                       # MD-4
    by_agent(app, "MD-2", "#problem MD-4\n", agent="lea")
    by_agent(app, "MD-4", "#workaround Use tray 1.\n#known-error\n#status closed\n")
    assert [(show(app, r)["status"], show(app, r)["resolved_by"]) for r in ("MD-1", "MD-2")] \
        == [("resolved", "MD-4")] * 2
    before = len(sent(app, "known_error"))
    by_agent(app, "MD-3", "#problem MD-4\n")                      # linked once it is fixed
    assert (show(app, "MD-3")["status"], show(app, "MD-3")["resolved_by"]) == \
        ("resolved", "MD-4")
    assert len(sent(app, "known_error")) == before, "its fix, not its workaround"
    assert [r for r, _t, _m in sent(app, "problem_resolved")] == ["MD-1", "MD-2", "MD-3"]


RULES = """\
rules:
  - name: printers
    on: [ticket.created]
    if: {subject: {contains: printer}}
    then:
      - link_problem: MD-1
"""


def test_link_problem_to_a_ticket_that_is_no_problem_links_nothing_and_says_why(
        make_app: Callable[..., App], db_url: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(textwrap.dedent(RULES))
    app = make_app(db_url, desk=DESK, rules=[str(rules)])
    ingest(app, [(mail(subject="Printer jammed", sender=ANA), PIPE)])        # MD-1 itself
    ingest(app, [(mail(subject="printer again", sender=CY), PIPE)])          # MD-2
    t = show(app, "MD-2")
    assert t["problem"] is None
    refused = next(e for e in t["events"] if e["kind"] == "link_problem.refused")
    assert (refused["actor"], refused["data"]["ref"], refused["data"]["reason"]) == \
        ("rule:printers", "MD-1", "MD-1 is a ticket of type incident, not a problem")
    by_agent(app, "MD-1", "#type problem\n#workaround Use tray 1.\n#known-error\n")
    ingest(app, [(mail(subject="printer, third", sender=DEE), PIPE)])        # MD-3
    assert show(app, "MD-3")["problem"] == "MD-1", "a problem now: linked"
    assert [(ref, to) for ref, to, _m in sent(app, "known_error")] == [("MD-3", [DEE])]


def test_the_command_line_links_records_and_lists_problems(
        app: App, desk_config: Callable[..., Path], db_url: str) -> None:
    cfg = desk_config(db_url, desk=DESK)
    ingest(app, [(mail(subject="Printer jammed", sender=ANA), PIPE),
                 (mail(subject="printer again", sender=CY), PIPE)])

    def cli(*args: str) -> str:
        r = run_cli(*args, config=cfg)
        assert r.returncode == 0, r.stderr
        return r.stdout.decode()

    assert "problem: - -> MD-3" in cli("tickets", "problem", "MD-1", "new", "--as", "bob")
    cli("tickets", "problem", "MD-2", "MD-3", "--as", "lea")
    wrong = run_cli("tickets", "problem", "MD-2", "MD-1", "--as", "lea", config=cfg)
    assert wrong.returncode == 64 and b"not a problem" in wrong.stderr
    early = run_cli("tickets", "known-error", "MD-3", "--as", "bob", config=cfg)
    assert early.returncode == 64 and b"needs its workaround" in early.stderr
    cli("tickets", "root-cause", "MD-3", "Firmware 2.1.", "--as", "bob")
    said = cli("tickets", "workaround", "MD-3", "Use tray 1.", "--as", "bob")
    assert "workaround: - -> Use tray 1." in said
    assert "known_error queued to" not in said
    said = cli("tickets", "known-error", "MD-3", "--as", "bob")
    assert "known_error: False -> True" in said
    assert [(ref, to) for ref, to, _m in sent(app, "known_error")] == [("MD-1", [ANA]),
                                                                       ("MD-2", [CY])]
    listed = json.loads(cli("problems", "list", "--format", "json"))
    assert listed == [{"ref": "MD-3", "subject": "Printer jammed", "status": "open",
                       "queue": "general", "assignee": "bob", "known_error": True,
                       "root_cause": "Firmware 2.1.", "workaround": "Use tray 1.",
                       "incidents": 2, "open_incidents": 2}]
    table = cli("problems", "list")
    assert "MD-3" in table and "root cause" in table and "Firmware 2.1." in table
    cli("tickets", "status", "MD-3", "resolved", "--as", "bob")
    listed = json.loads(cli("problems", "list", "--format", "json"))
    assert (listed[0]["incidents"], listed[0]["open_incidents"]) == (2, 0)
    problem, incident = cli("tickets", "show", "MD-3"), cli("tickets", "show", "MD-1")
    for said in ("root_cause:  Firmware 2.1.", "workaround:  Use tray 1.",
                 "known_error: yes", "resolved: MD-1, MD-2"):
        assert said in problem, (said, problem)
    assert "problem:     MD-3" in incident and "resolved_by: MD-3" in incident, incident
    assert "root_cause:" not in incident and "tags:" not in incident, \
        "a field with nothing in it is left out"


# -- end to end: a real `maildesk serve`, real SMTP, the outbox maildir ----------------------

def test_a_known_errors_workaround_reaches_linked_requesters_and_resolving_the_problem_resolves_and_notifies_its_incidents(  # noqa: E501
        daemon: Callable[..., Any]) -> None:
    from test_first_day import BOB, Desk, a_mail, reply_to
    from test_first_day import text as said
    d = daemon(desk={"agents": [{"name": "bob", "address": BOB, "queues": ["general"]}],
                     "trusted_relays": ["127.0.0.1"], "trusted_authserv_ids": ["mx.desk.test"]})
    desk = Desk(d)
    support = "support@localhost"
    notices = []
    for who, subject in ((ANA, "Printer jammed"), (CY, "Printer prints nothing")):
        desk.send(who, support, a_mail(who, support, subject, "Floor 2."))
        desk.next_mail(who, f"{who}'s acknowledgement")
        notices.append(desk.next_mail(BOB, f"the notice of {who}'s ticket"))
    for notice, command in zip(notices, ("#problem new\n", "#problem MD-3\n")):
        desk.send(BOB, reply_to(notice), a_mail(BOB, reply_to(notice), "Re: x", command,
                                                answering=notice))
        if command == "#problem new\n":   # the problem's own notice: where its record goes
            made = desk.next_mail(BOB, "the notice of the problem bob made")
            assert made["Subject"].startswith("[MD-3] New: ") and "#workaround" in said(made)
    problem = reply_to(made)
    assert re.fullmatch(r"support\+md-3-\w+@localhost", problem), problem

    # a known error: each linked requester gets the workaround, on their own ticket
    desk.send(BOB, problem, a_mail(BOB, problem, "Re: printers",
                                   "#root-cause Fuser firmware 2.1.\n"
                                   "#workaround Print from tray 1 until Friday.\n"
                                   "#known-error\n"))
    for who, ref in ((ANA, "MD-1"), (CY, "MD-2")):
        m = desk.next_mail(who, f"the workaround for {who}")
        assert f"[{ref}]" in m["Subject"] and "Print from tray 1 until Friday." in said(m)
        assert reply_to(m).startswith(f"support+{ref.lower()}-")

    # the problem resolved: so are its incidents, and their requesters hear of it
    desk.send(BOB, problem, a_mail(BOB, problem, "Re: printers", "#status resolved\n"))
    for who, ref in ((ANA, "MD-1"), (CY, "MD-2")):
        m = desk.next_mail(who, f"{ref} resolved with its problem")
        assert f"[{ref}] Resolved" in m["Subject"] and "has been fixed" in said(m)
        shown = json.loads(desk.cli("tickets", "show", ref, "--format", "json").stdout)
        assert (shown["status"], shown["resolved_by"]) == ("resolved", "MD-3")
    assert d.stop() == 0, "a clean stop"
