"""Finding recurring incidents (issue 20): incidents that say the same thing at about the
same time are grouped (ml/cluster.py), proposed to their queue's group lead by mail, and
the lead's answer to the proposal makes the problem ticket and links them all. Through
the real pipeline on SQLite and PostgreSQL, the command line, and a real `maildesk
serve`."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import mail, run_cli, wait_for
from sqlalchemy import select
from test_problems import PIPE, sent, show, text

from maildesk.app import App
from maildesk.ml.cluster import Doc, groups
from maildesk.ml.words import ticket_terms
from maildesk.pipeline.run import ingest
from maildesk.scheduler.jobs import propose_problems
from maildesk.store.models import Inbound, ProblemProposal
from maildesk.tickets.refs import proposal_address, token_address

DESK = {"queues": [{"name": "general", "group": "helpdesk"}],
        "addresses": ["support@localhost"],
        "agents": [{"name": "bob", "address": "bob@desk.test", "groups": ["helpdesk"]},
                   {"name": "lea", "address": "lea@desk.test", "groups": ["helpdesk"]}],
        "groups": [{"name": "helpdesk", "lead": "lea"}]}

# five people, five wordings, one outage; and what else arrived meanwhile
OUTAGE = [("ana@customer.test", "SAP is down", "SAP won't load at all, I get a timeout."),
          ("cy@customer.test", "Can't reach SAP", "Is SAP down? Nobody in my team can open it."),
          ("dee@customer.test", "SAP unavailable?", "SAP says service unavailable at login."),
          ("eli@customer.test", "urgent: SAP", "We can't work, SAP does not respond at all."),
          ("flo@customer.test", "SAP not loading", "SAP has been spinning forever, then an "
                                                   "error page.")]
OTHERS = [("fay@customer.test", "Invoice 4411 wrong", "The invoice charges 40 units, we got 25."),
          ("gus@customer.test", "New laptop", "Please order a notebook for our new hire."),
          ("hal@customer.test", "Printer jam", "Paper is stuck in the copier on floor 2.")]


@pytest.fixture
def app(make_app: Callable[..., App], db_url: str) -> App:
    return make_app(db_url, desk=DESK)


def arrive(app: App, mails: list[tuple[str, str, str]]) -> None:
    ingest(app, [(mail(subject=s, body=b, sender=who), PIPE) for who, s, b in mails])


def answer(app: App, to: str, sender: str = "lea@desk.test", **headers: str) -> str:
    """A mail to a proposal's address; the state the pipeline left it in."""
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, to, "Re: 5 similar incidents"
    m["Message-ID"] = f"<{abs(hash((to, sender, tuple(headers.items()))))}@desk.test>"
    for k, v in headers.items():
        m[k.replace("_", "-")] = v
    m.set_content("Yes, one outage.\n")
    ingest(app, [(m.as_bytes(), PIPE)])
    with app.sessions() as s:
        return str(s.scalars(select(Inbound.state).order_by(Inbound.id.desc())).first())


def proposals(app: App) -> list[ProblemProposal]:
    with app.sessions() as s:
        return list(s.scalars(select(ProblemProposal).order_by(ProblemProposal.id)))


# -- the grouping itself ----------------------------------------------------------------

def _docs(texts: list[tuple[float, str]]) -> list[Doc]:
    return [Doc(i, at, ticket_terms(t)) for i, (at, t) in enumerate(texts)]


def test_alike_incidents_within_the_span_are_one_group_and_the_rest_none() -> None:
    docs = _docs([(i * 600.0, f"{s}\n{b}") for i, (_w, s, b) in enumerate(OUTAGE + OTHERS)])
    found = groups(docs, similarity=0.2, span=7200, min_size=3)
    assert [g.keys for g in found] == [(0, 1, 2, 3, 4)]
    assert "sap" in found[0].words


def test_the_same_words_days_apart_are_no_outage() -> None:
    """Four people forgetting their password in a week is everyday; in an hour it is not."""
    said = "I forgot my password and cannot log in."
    apart = _docs([(day * 86400.0, said) for day in range(4)] + [(9e6, "unrelated words")])
    together = _docs([(minute * 60.0, said) for minute in range(4)] + [(9e6, "other words")])
    assert groups(apart, similarity=0.4, span=7200, min_size=3) == []
    assert [g.keys for g in groups(together, similarity=0.4, span=7200, min_size=3)] == \
        [(0, 1, 2, 3)]


def test_a_group_needs_min_size_and_nothing_needs_no_words() -> None:
    docs = _docs([(0.0, "SAP is down"), (60.0, "SAP down again"), (120.0, "VPN")])
    assert groups(docs, similarity=0.2, span=7200, min_size=3) == []
    assert groups(_docs([(0.0, "!!"), (1.0, "??"), (2.0, "..")]), similarity=0.1, span=60,
                  min_size=2) == []
    assert groups([], similarity=0.4, span=60, min_size=3) == []


def test_a_span_is_said_in_words_rounded_up() -> None:
    """The proposal's "arrived within ..." (filter `duration`): never less than it was."""
    from maildesk.notify.templates import duration
    said = [duration(timedelta(seconds=s)) for s in (0, 40, 240, 241, 5400, 7200, 3 * 86400)]
    assert said == ["1 second", "40 seconds", "4 minutes", "5 minutes", "90 minutes",
                    "2 hours", "3 days"]


# -- proposed by the job, accepted by the lead's answer ---------------------------------

def test_a_group_is_proposed_to_the_lead_once_and_their_answer_makes_the_problem(
        app: App) -> None:
    arrive(app, OUTAGE + OTHERS)
    now = datetime.now(timezone.utc) + timedelta(minutes=1)
    assert propose_problems(app, now) == "1 proposed"
    assert propose_problems(app, now) == "no new group", "proposed once"
    [p] = proposals(app)
    assert (p.queue, p.lead, p.problem) == ("general", "lea@desk.test", None)
    assert "sap" in p.words
    [(to, m)] = [(to, m) for _r, to, m in sent_all(app, "problem_proposal")]
    assert to == ["lea@desk.test"], "the group's lead, alone"
    for ref in ("MD-1", "MD-2", "MD-3", "MD-4", "MD-5"):
        assert ref in text(m)
    assert "MD-6" not in text(m)
    assert re.search(r"arrived within \d+ seconds? of each other", text(m)), \
        "the span the incidents took, not problems.span (2h)"
    reply = m["Reply-To"].addresses[0].addr_spec
    assert reply == proposal_address(app.secrets[0], "support@localhost", p.id, "lea@desk.test")

    assert answer(app, reply) == "proposal"
    problem = show(app, "MD-9")
    assert (problem["type"], problem["assignee"], problem["status"]) == \
        ("problem", "lea", "open")
    assert problem["subject"] == "Recurring: SAP is down"
    for ref in ("MD-1", "MD-2", "MD-3", "MD-4", "MD-5"):
        assert show(app, ref)["problem"] == "MD-9"
    assert show(app, "MD-6")["problem"] is None
    assert proposals(app)[0].problem == "MD-9"
    assert [m["text"] for m in problem["messages"] if m["direction"] == "in"] == \
        ["Yes, one outage."]
    [(to, made)] = [(to, m) for r, to, m in sent(app, "agent_notification") if r == "MD-9"]
    assert to == ["lea@desk.test"] and "Its incidents: MD-1, MD-2, MD-3, MD-4, MD-5" in \
        text(made), "the lead gets the problem's reply address, to write its record"
    assert made["Reply-To"].addresses[0].addr_spec == token_address(
        app.secrets[0], "support@localhost", "MD-9", "lea@desk.test")

    assert answer(app, reply, X_Again="yes") == "proposal", "a second answer"
    assert [t["ref"] for t in all_problems(app)] == ["MD-9"], "makes no second problem"


def sent_all(app: App, template: str) -> list[tuple[None, list[str], EmailMessage]]:
    """Mail of a template that belongs to no ticket (sent() joins tickets)."""
    import email
    from email import policy

    from maildesk.store.models import OutboxMail
    with app.sessions() as s:
        rows = s.execute(select(OutboxMail.to, OutboxMail.digest)
                         .where(OutboxMail.template == template).order_by(OutboxMail.id)).all()
    return [(None, list(to), email.message_from_bytes(app.blobs.get(d),  # type: ignore[arg-type]
                                                      policy=policy.default))
            for to, d in rows]


def all_problems(app: App) -> list[dict[str, Any]]:
    from maildesk.tickets.views import list_problems
    with app.sessions() as s:
        return list_problems(s)


def reason(app: App) -> str:
    with app.sessions() as s:
        return str(s.scalars(select(Inbound.reason).order_by(Inbound.id.desc())).first())


@pytest.mark.parametrize("sender, headers, state, why", [
    ("bob@desk.test", {}, "refused", "to an address not made for them"),   # another agent
    ("mallory@evil.test", {}, "refused", "who is no agent of this desk"),  # nobody's
    ("lea@desk.test", {"Auto_Submitted": "auto-replied"}, "auto-reply",    # lea's vacation
     "not an answer to proposal"),
])
def test_an_answer_from_anyone_else_or_a_machine_makes_nothing(
        app: App, sender: str, headers: dict[str, str], state: str, why: str) -> None:
    arrive(app, OUTAGE)
    propose_problems(app, datetime.now(timezone.utc) + timedelta(minutes=1))
    [p] = proposals(app)
    to = proposal_address(app.secrets[0], "support@localhost", p.id, "lea@desk.test")
    assert answer(app, to, sender, **headers) == state
    assert why in reason(app)
    assert all_problems(app) == [] and proposals(app)[0].problem is None


def test_a_forged_or_unknown_proposal_address_makes_nothing(app: App) -> None:
    arrive(app, OUTAGE)
    propose_problems(app, datetime.now(timezone.utc) + timedelta(minutes=1))
    [p] = proposals(app)
    good = proposal_address(app.secrets[0], "support@localhost", p.id, "lea@desk.test")
    forged = re.sub(r"-([a-z2-7]+)@", "-aaaaaaaaaaaaaaaaaaaa@", good)
    assert answer(app, forged) == "refused"
    assert "lea@desk.test, to an address not made for them" in reason(app)
    other = proposal_address(app.secrets[0], "support@localhost", p.id + 1, "lea@desk.test")
    assert answer(app, other) == "refused"
    assert all_problems(app) == []


def test_a_queue_without_a_lead_proposes_to_its_agents_and_linked_incidents_are_left_out(
        make_app: Callable[..., App], db_url: str) -> None:
    app = make_app(db_url, desk=DESK | {"groups": [{"name": "helpdesk"}]})
    arrive(app, OUTAGE[:1])
    from test_problems import by_agent
    by_agent(app, "MD-1", "#problem new\n")                       # MD-2, holding MD-1
    arrive(app, OUTAGE[1:] + OUTAGE[:1])                          # MD-3..MD-7
    propose_problems(app, datetime.now(timezone.utc) + timedelta(minutes=1))
    [p] = proposals(app)
    assert sorted(to[0] for _n, to, _m in sent_all(app, "problem_proposal")) == \
        ["bob@desk.test", "lea@desk.test"]
    with app.sessions() as s:
        from maildesk.store.models import Ticket
        refs = set(s.scalars(select(Ticket.ref).where(Ticket.id.in_(p.tickets))))
    assert refs == {"MD-3", "MD-4", "MD-5", "MD-6", "MD-7"}


# -- the command line ----------------------------------------------------------------------

def test_the_command_line_shows_proposes_lists_and_accepts(
        app: App, desk_config: Callable[..., Path], db_url: str) -> None:
    cfg = desk_config(db_url, desk=DESK)
    arrive(app, OUTAGE + OTHERS)

    def cli(*args: str) -> str:
        r = run_cli(*args, config=cfg)
        assert r.returncode == 0, r.stderr
        return r.stdout.decode()

    shown = json.loads(cli("problems", "suggest", "--format", "json"))
    assert [g["incidents"] for g in shown] == [["MD-1", "MD-2", "MD-3", "MD-4", "MD-5"]]
    assert shown[0]["proposal"] is None and proposals(app) == [], "only shown"
    table = cli("problems", "suggest")
    assert "MD-1 MD-2 MD-3 MD-4 MD-5" in table
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d ", table) and not re.search(r"\dT\d", table), \
        "times as `tickets list` shows them"
    none = cli("problems", "suggest", "--since", "1s")
    assert "no group of 5 or more alike incidents in the last 1s" in none
    for wrong, said in (("soon", b"not a duration"), ("99999999d", b"over 100 years"),
                        ("0", b"0 holds no incident")):
        bad = run_cli("problems", "suggest", "--since", wrong, config=cfg)
        assert bad.returncode == 64 and b"--since" in bad.stderr and said in bad.stderr, \
            bad.stderr
        assert b"Traceback" not in bad.stderr
    made = json.loads(cli("problems", "suggest", "--propose", "--format", "json"))
    pid = made[0]["proposal"]
    assert isinstance(pid, int) and len(sent_all(app, "problem_proposal")) == 1
    assert json.loads(cli("problems", "suggest", "--format", "json")) == [], "proposed once"
    listed = json.loads(cli("problems", "proposals", "--format", "json"))
    assert [(r["id"], r["to"], r["incidents"], r["subject"], r["problem"], r["assignee"])
            for r in listed] == \
        [(pid, "lea@desk.test", ["MD-1", "MD-2", "MD-3", "MD-4", "MD-5"], "SAP is down", None,
          None)]
    assert "lea@desk.test" in cli("problems", "proposals")
    unknown = run_cli("problems", "accept", str(pid + 5), "--as", "bob", config=cfg)
    assert unknown.returncode == 66 and b"no proposal" in unknown.stderr
    nobody = run_cli("problems", "accept", str(pid), "--as", "zed", config=cfg)
    assert nobody.returncode == 67
    assert cli("problems", "accept", str(pid), "--as", "bob").startswith(
        f"MD-9: problem of proposal {pid}, assigned to bob")
    assert show(app, "MD-3")["problem"] == "MD-9"
    accepted = json.loads(cli("problems", "proposals", "--format", "json"))[0]
    assert (accepted["problem"], accepted["assignee"]) == ("MD-9", "bob")
    table = cli("problems", "proposals")
    for said in ("SAP is down", "MD-9", "bob", accepted["accepted_at"][:16].replace("T", " ")):
        assert said in table, (said, table)
    assert not re.search(r"\dT\d", table), "times as `tickets list` shows them"
    again = cli("problems", "accept", str(pid), "--as", "lea")
    assert again.startswith(f"MD-9: proposal {pid} was accepted already; its problem is "
                            "assigned to bob"), again
    assert (show(app, "MD-9")["assignee"], len(show(app, "MD-9")["messages"])) == ("bob", 1), \
        "taken over by nobody; an empty answer is no note (the one message: bob's notice)"


# -- end to end: a real `maildesk serve`, real SMTP, the outbox maildir ----------------------

def test_a_proposal_mail_answered_by_the_lead_makes_the_problem_with_its_links(
        daemon: Callable[..., Any]) -> None:
    from test_first_day import Desk, a_mail, reply_to
    from test_first_day import text as said
    lea = "lea@desk.test"
    d = daemon(desk={"agents": [{"name": "lea", "address": lea, "groups": ["helpdesk"]}],
                     "groups": [{"name": "helpdesk", "lead": "lea"}],
                     "queues": [{"name": "general", "group": "helpdesk"}]})
    desk = Desk(d)
    support = "support@localhost"
    for who, subject, body in OUTAGE + OTHERS:
        desk.send(who, support, a_mail(who, support, subject, body))
        desk.next_mail(who, f"{who}'s acknowledgement")
        desk.next_mail(lea, f"the notice of {who}'s ticket")
    r = desk.cli("jobs", "run", "propose_problems", "--force")
    assert r.returncode == 0, r.stderr
    proposal = desk.next_mail(lea, "the proposal")
    assert "5 similar incidents" in str(proposal["Subject"])
    assert all(ref in said(proposal) for ref in ("MD-1", "MD-2", "MD-3", "MD-4", "MD-5"))
    to = reply_to(proposal)
    assert to.startswith("support+problem-")
    desk.send(lea, to, a_mail(lea, to, f"Re: {proposal['Subject']}", "Yes.\n",
                              answering=proposal))
    wait_for(lambda: json.loads(desk.cli("problems", "list", "--format", "json").stdout),
             60, "the problem")
    [problem] = json.loads(desk.cli("problems", "list", "--format", "json").stdout)
    assert (problem["ref"], problem["assignee"], problem["incidents"]) == ("MD-9", "lea", 5)
    for ref in ("MD-1", "MD-2", "MD-3", "MD-4", "MD-5"):
        shown = json.loads(desk.cli("tickets", "show", ref, "--format", "json").stdout)
        assert shown["problem"] == "MD-9"
    assert d.stop() == 0, "a clean stop"


@pytest.mark.parametrize("section, key", [("problems", "since"), ("surveys", "delay")])
def test_a_duration_past_a_century_is_a_config_error_not_a_crash_of_the_jobs(
        desk_config: Callable[..., Path], section: str, key: str) -> None:
    """Subtracted from now, 99999999d is before year 1: the job died with OverflowError
    after `config check` had said ok. Every duration setting has the parser's bound."""
    cfg = desk_config(**{section: {key: "99999999d"}})
    r = run_cli("config", "check", config=cfg)
    assert r.returncode == 78 and b"over 100 years" in r.stderr, r.stderr
    assert f"{section}.{key}".encode() in r.stderr and b"Traceback" not in r.stderr
