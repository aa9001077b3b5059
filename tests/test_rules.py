"""The rules engine: language, validation, actions through the real pipeline, dry runs."""
from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import mail, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maildesk.app import App
from maildesk.config.schema import Desk
from maildesk.intake.inbound import Envelope
from maildesk.mail.parse import parse
from maildesk.pipeline.run import ingest
from maildesk.rules.load import RulesError, load
from maildesk.rules.vocabulary import facts_for
from maildesk.store.blobs import digest_of
from maildesk.store.rows import TicketRow
from maildesk.tickets.views import show_ticket

TEMPLATES = {"acknowledgement", "refused", "escalation", "ticket_notice"}
DESK = Desk.model_validate({
    "queues": [{"name": "general"}, {"name": "it"}, {"name": "facilities"}],
    "agents": [{"name": "bob", "address": "bob@desk.test", "groups": ["it-team"]},
               {"name": "lea", "address": "lea@desk.test", "groups": ["it-team"]},
               {"name": "max", "address": "max@desk.test"}],
    "groups": [{"name": "it-team", "lead": "max"}],
    "hours": {"timezone": "Europe/Berlin"}})


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def ticket_row(**kw: Any) -> TicketRow:
    now = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
    base = dict(number=1, ref="MD-1", subject="s", requester="ana@customer.test",
                requester_name="Ana", cc=[], status="open", type="incident", priority="P3",
                impact="medium", urgency="medium", tags=["vip"], problem=None, category=None,
                queue="general", assignee=None, linked_to=None, created_at=now, updated_at=now)
    return TicketRow(**(base | kw))


def matches(tmp_path: Path, cond: str, raw: bytes | None = None, now: datetime | None = None,
            **ticket: Any) -> bool:
    path = write(tmp_path, f"""\
        - name: probe
          on: ticket.created
          if: {cond}
          then: [{{tags: {{add: [hit]}}}}]
        """)
    rs = load([path], DESK, TEMPLATES)
    raw = raw or mail()
    m = parse(raw, digest_of(raw))
    now = now or datetime(2026, 11, 2, 10, 0, tzinfo=timezone.utc)
    facts = facts_for(DESK, ticket_row(**ticket), m, now, recipients=("support@localhost",))
    return bool(rs.evaluate("ticket.created", facts).actions)


@pytest.mark.parametrize("cond, expect", [
    ("{from: ana@customer.test}", True),
    ("{from: {domain: customer.test}}", True),
    ("{from: {domain: [other.test, sub.customer.test]}}", False),
    ("{sender_domain: [customer.test, x.test]}", True),
    ("{subject: {contains: PRINTER}}", True),
    ("{subject: {matches: 'floor \\d'}}", True),
    ("{subject: {matches: '^jammed'}}", False),
    ("{body: {contains: blinks}}", True),
    ("{to: support@localhost}", True),
    ("{address: {contains: support@localhost}}", True),
    ("{has_attachment: false}", True),
    ("{header.x-mailer: {contains: thunder}}", True),
    ("{header.x-missing: anything}", False),
    ("{tags: {contains: vip}}", True),
    ("{tags: [vip, gold]}", True),
    ("{queue: general, status: open}", True),
    ("{queue: it}", False),
    ("{priority: {in: [P1, P2]}}", False),
    ("{age: {gt: 30m}}", True),
    ("{age: {lt: 30m}}", False),
    ("{business_hours: true}", True),
    ("{replies: {lt: 1}}", True),
    ("{not: {subject: {contains: printer}}}", False),
    ("{any: [{subject: {contains: nope}}, {body: {contains: red}}]}", True),
    ("{all: [{subject: {contains: printer}}, {body: {contains: green}}]}", False),
])
def test_each_condition(tmp_path: Path, cond: str, expect: bool) -> None:
    raw = mail(X_Mailer="Thunderbird 128")
    assert matches(tmp_path, cond, raw) is expect


def test_business_hours_follow_the_desk_time_zone(tmp_path: Path) -> None:
    saturday = datetime(2026, 11, 7, 10, 0, tzinfo=timezone.utc)
    late = datetime(2026, 11, 2, 16, 30, tzinfo=timezone.utc)     # 17:30 in Berlin
    assert not matches(tmp_path, "{business_hours: true}", now=saturday)
    assert not matches(tmp_path, "{business_hours: true}", now=late)
    assert matches(tmp_path, "{business_hours: true}", now=late - timedelta(hours=1))


def test_every_validation_error_with_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        - name: one
          on: ticket.created
          if:
            subject: {containz: x}
            body: {matches: '(unclosed'}
            priority: {gt: 3}
            nosuchfield: 1
            age: {gt: soon}
          then:
            - set: {queue: nowhere, impact: huge, colour: red}
            - notify: {template: nope, to: ghosts}
            - escalate: {group: nobody, level: 9}
        - name: one
          on: [ticket.created, ticket.exploded]
          colour: blue
          then:
            - frobnicate: true
            - set: {assignee: stranger}
        - name: drops replies
          on: customer.replied
          then: [{drop: spam}]
        - name: catch all
          on: customer.replied
          then: [{set: {status: open}}]
          stop: true
        - name: never
          on: customer.replied
          if: {age: {gt: 2h}}
          then: [{close: true}]
        """)
    with pytest.raises(RulesError) as e:
        load([path], DESK, TEMPLATES)
    got = [re.sub(r"^.*?rules\.yaml:", "", p) for p in e.value.problems]
    expected = [
        "4:15: unknown operator 'containz'", "5:12: bad regular expression '(unclosed'",
        "6:16: operator 'gt' does not apply to text field 'priority'",
        "7:5: unknown field 'nosuchfield'", "8:11: 'soon' is not a duration",
        "10:13: 'nowhere' is not a valid queue", "10:29: 'huge' is not a valid impact",
        "10:43: cannot set 'colour'", "11:16: unknown template 'nope'",
        "11:32: unknown recipient 'ghosts'", "12:18: unknown group 'nobody'",
        "12:33: escalation level 9 out of range",
        "13:3: duplicate rule name 'one'", "14:24: unknown event 'ticket.exploded'",
        "15:3: unknown rule key 'colour'", "17:7: unknown action 'frobnicate'",
        "18:13: unknown agent 'stranger'", "21:11: only a new mail can be dropped",
        "26:3: rule 'never' can never run"]
    for want in expected:
        assert any(g.startswith(want) for g in got), (want, got)
    assert len(got) == len(expected), got


def test_includes_load_in_order_and_loops_are_caught(tmp_path: Path) -> None:
    write(tmp_path, "- {name: first, on: ticket.created, then: [{tags: {add: [a]}}]}\n",
          "base.yaml")
    main = write(tmp_path, """\
        include: [base.yaml]
        rules:
          - {name: second, on: ticket.created, then: [{tags: {add: [b]}}]}
        """)
    assert [r.name for r in load([main], DESK, TEMPLATES).rules] == ["first", "second"]
    write(tmp_path, "include: [rules.yaml]\n", "base.yaml")
    with pytest.raises(RulesError, match="include loop"):
        load([main], DESK, TEMPLATES)


# -- through the pipeline -------------------------------------------------------------

@pytest.fixture
def desk(make_app: Callable[..., App], tmp_path: Path, db_url: str) -> Callable[[str], App]:
    def make(rules: str) -> App:
        return make_app(db_url, rules=[str(write(tmp_path, rules))],
                        desk=DESK.model_dump(mode="json") | {"ack_window": 0,
                                                             "flood_limit": 1_000_000})
    return make


def show(app: App, ref: str) -> dict[str, Any]:
    with app.sessions() as s:
        data = show_ticket(s, ref)
    assert data is not None
    return data


def outbox(app: App, ref: str) -> list[tuple[str, list[str]]]:
    with app.engine.connect() as c:
        rows = c.exec_driver_sql(
            "SELECT o.template, o.\"to\" FROM outbox o JOIN tickets t ON t.id = o.ticket_id "
            "WHERE t.ref = ? ORDER BY o.id" if app.engine.dialect.name == "sqlite" else
            "SELECT o.template, o.\"to\" FROM outbox o JOIN tickets t ON t.id = o.ticket_id "
            "WHERE t.ref = %s ORDER BY o.id", (ref,)).all()
    return [(t, json.loads(to) if isinstance(to, str) else to) for t, to in rows]


PIPE = Envelope("pipe", None)


def test_actions_change_the_ticket_and_events_name_the_rule(desk: Callable[[str], App]) -> None:
    app = desk("""\
        - name: password resets are requests
          on: ticket.created
          if: {subject: {contains: password}}
          then:
            - set: {type: request, category: access, queue: it, assignee: bob}
            - tags: {add: [password, self-service]}
        - name: outages are high impact
          on: [ticket.created, customer.replied]
          if: {subject: {matches: '\\b(down|outage)\\b'}}
          then:
            - set: {impact: high, urgency: high}
            - notify: {template: ticket_notice, to: it-team}
            - link_problem: md-100
        """)
    ingest(app, [(mail(subject="Password reset please"), PIPE),
                 (mail(subject="Mail server is down", message_id="<down@c.test>"), PIPE)])
    t1 = show(app, "MD-1")
    assert (t1["type"], t1["category"], t1["queue"], t1["assignee"], t1["tags"]) == \
        ("request", "access", "it", "bob", ["password", "self-service"])
    changed = [e for e in t1["events"] if e["kind"] == "ticket.updated"]
    assert {e["data"]["field"] for e in changed} == {"type", "category", "queue", "assignee",
                                                     "tags"}
    assert all(e["actor"] == "rule:password resets are requests" for e in changed)
    t2 = show(app, "MD-2")
    assert (t2["impact"], t2["urgency"], t2["priority"], t2["problem"]) == \
        ("high", "high", "P1", None), "no problem MD-100: linked to nothing"
    refused = [e for e in t2["events"] if e["kind"] == "link_problem.refused"]
    assert [(e["actor"], e["data"]["reason"]) for e in refused] == \
        [("rule:outages are high impact", "no ticket MD-100")]
    assert outbox(app, "MD-2") == [("ticket_notice", ["bob@desk.test"]),
                                   ("ticket_notice", ["lea@desk.test"]),
                                   ("acknowledgement", ["ana@customer.test"])], \
        "each agent gets a mail of their own: its Reply-To is their reply address"


def test_priority_matrix_and_explicit_priority(desk: Callable[[str], App]) -> None:
    app = desk("""\
        - name: low impact
          on: ticket.created
          if: {subject: {contains: cosmetic}}
          then: [{set: {impact: low, urgency: medium}}]
        - name: vip wins
          on: ticket.created
          if: {from: {domain: vip.test}}
          then: [{set: {priority: p1}}, {set: {impact: low}}]
        """)
    ingest(app, [(mail(subject="cosmetic glitch"), PIPE),
                 (mail(subject="cosmetic", sender="ceo@vip.test"), PIPE)])
    assert show(app, "MD-1")["priority"] == "P4"          # low x medium in the ITIL matrix
    assert show(app, "MD-2")["priority"] == "P1", "a rule's priority beats the matrix"


def test_rule_order_and_stop(desk: Callable[[str], App]) -> None:
    app = desk("""\
        - name: first
          on: ticket.created
          then: [{tags: {add: [one]}}]
        - name: stops vip
          on: ticket.created
          if: {from: {domain: vip.test}}
          then: [{tags: {add: [two]}}]
          stop: true
        - name: last
          on: ticket.created
          then: [{tags: {add: [three]}}]
        """)
    ingest(app, [(mail(sender="x@vip.test"), PIPE), (mail(subject="other"), PIPE)])
    assert show(app, "MD-1")["tags"] == ["one", "two"]
    assert show(app, "MD-2")["tags"] == ["one", "three"]


def test_acknowledgement_suppressed_or_replaced_and_spam_dropped(
        desk: Callable[[str], App]) -> None:
    app = desk("""\
        - name: internal senders get no acknowledgement
          on: ticket.created
          if: {sender_domain: desk.test}
          then: [{acknowledge: false}]
        - name: facilities answer
          on: ticket.created
          if: {subject: {contains: heating}}
          then: [{acknowledge: refused}, {set: {queue: facilities}}]
        - name: upstream spam flag
          on: ticket.created
          if: {header.x-spam-flag: 'yes'}
          then: [{drop: spam}]
        """)
    s = ingest(app, [(mail(sender="bob@desk.test"), PIPE),
                     (mail(subject="heating broken"), PIPE),
                     (mail(subject="cheap pills", X_Spam_Flag="YES"), PIPE),
                     (mail(subject="after the spam"), PIPE)])
    assert (s.new_tickets, s.dropped) == (3, 1)
    kinds = [e["kind"] for e in show(app, "MD-1")["events"]]
    assert "acknowledgement.suppressed" in kinds and outbox(app, "MD-1") == []
    assert outbox(app, "MD-2") == [("refused", ["ana@customer.test"])]
    assert show(app, "MD-3")["subject"] == "after the spam", "no gap after a dropped mail"


def test_escalation_to_a_group_reaches_its_lead_at_level_2(desk: Callable[[str], App]) -> None:
    app = desk("""\
        - name: angry customers
          on: customer.replied
          if: {body: {matches: 'unacceptable|escalate'}}
          then: [{escalate: {group: it-team, level: 2, queue: it}}]
        """)
    ingest(app, [(mail(), PIPE)])
    ingest(app, [(mail(subject="Re: [MD-1] x", body="This is unacceptable.\n"), PIPE)])
    t = show(app, "MD-1")
    esc = [e for e in t["events"] if e["kind"] == "ticket.escalated"][0]
    assert esc["data"] == {"level": 2, "queue": "it", "group": "it-team",
                           "rule": "angry customers"}
    assert t["queue"] == "it"
    sent = outbox(app, "MD-1")
    assert all(("escalation", [a]) in sent
               for a in ("bob@desk.test", "lea@desk.test", "max@desk.test")), sent


# -- the CLI --------------------------------------------------------------------------

def test_rules_check_and_dry_run(desk_config: Callable[..., Path], tmp_path: Path) -> None:
    rules = write(tmp_path, """\
        - name: printers to facilities
          on: ticket.created
          if: {subject: {contains: printer}}
          then: [{set: {queue: facilities, urgency: high}}]
        - name: never for printers
          on: ticket.created
          if: {body: {contains: 'no such words'}}
          then: [{close: true}]
        """)
    cfg = desk_config(rules=[str(rules)], desk=DESK.model_dump(mode="json"))
    r = run_cli("rules", "check", config=cfg)
    assert r.returncode == 0 and r.stdout.decode().startswith("2 rules in ")
    eml = tmp_path / "m.eml"
    eml.write_bytes(mail())
    r = run_cli("rules", "test", str(eml), "--format", "json", config=cfg)
    out = json.loads(r.stdout)
    assert [(v["name"], v["matched"]) for v in out["rules"]] == [
        ("printers to facilities", True), ("never for printers", False)]
    assert out["rules"][1]["why_not"] == "body contains 'no such words'"
    assert out["ticket_after"]["queue"] == "facilities"
    assert out["ticket_after"]["priority"] == "P2"
    r = run_cli("tickets", "list", "--format", "json", config=cfg)
    assert r.returncode == 66 and b"no desk at" in r.stderr, "the dry run made nothing"
    text = run_cli("rules", "test", str(eml), config=cfg).stdout.decode()
    assert "match    printers to facilities" in text and "'general' -> 'facilities'" in text
    bad = write(tmp_path, "- {name: x, on: ticket.created, then: [{set: {queue: nope}}]}\n",
                "bad.yaml")
    r = run_cli("rules", "check", str(bad), config=cfg)
    assert r.returncode == 78
    assert f"{bad}:1:47: 'nope' is not a valid queue" in r.stderr.decode()


def test_the_dry_run_plays_the_chain_a_change_fires(desk_config: Callable[..., Path],
                                                    tmp_path: Path) -> None:
    """`rules test` shows what the pipeline does: a rule's change fires ticket.updated and
    its rules, and a loop stops where the pipeline stops it."""
    eml = tmp_path / "m.eml"
    eml.write_bytes(mail())

    def dry_run(text: str) -> dict[str, Any]:
        cfg = desk_config(rules=[str(write(tmp_path, text))],
                          desk=DESK.model_dump(mode="json"))
        r = run_cli("rules", "test", str(eml), "--format", "json", config=cfg)
        return json.loads(r.stdout)
    out = dry_run("""\
        - {name: route, on: ticket.created, then: [{set: {queue: it}}]}
        - {name: routed, on: ticket.updated, if: {changed: queue}, then: [{tags: {add: [r]}}]}
        """)
    assert (out["ticket_after"]["queue"], out["ticket_after"]["tags"]) == ("it", ["r"])
    assert out["rules_stopped"] == []
    out = dry_run("""\
        - {name: start, on: ticket.created, then: [{tags: {add: [ping]}}]}
        - name: ping
          on: ticket.updated
          if: {tags: {contains: ping}}
          then: [{tags: {add: [pong], remove: [ping]}}]
        - name: pong
          on: ticket.updated
          if: {tags: {contains: pong}}
          then: [{tags: {add: [ping], remove: [pong]}}]
        """)
    assert len(out["rules_stopped"]) == 1 and "5 events deep" in out["rules_stopped"][0]


def test_bad_rules_stop_the_start_with_their_lines(desk_config: Callable[..., Path],
                                                   tmp_path: Path) -> None:
    bad = write(tmp_path, "- {name: x, on: ticket.created, if: {subjekt: a}, then: []}\n")
    cfg = desk_config(rules=[str(bad)])
    r = run_cli("ingest", config=cfg, input=mail())
    assert r.returncode == 78
    assert f"{bad}:1:38: unknown field 'subjekt'" in r.stderr.decode()


# -- property tests -------------------------------------------------------------------

FIELD_VALUES = {"subject": ("contains", st.text("abc xyz", min_size=1, max_size=8)),
                "queue": ("is", st.sampled_from(["general", "it", "facilities"])),
                "from": ("domain", st.sampled_from(["a.test", "b.test"])),
                "age": ("gt", st.sampled_from(["1h", "30m", "2d"])),
                "tags": ("contains", st.sampled_from(["vip", "x"]))}
ACTIONS = st.sampled_from(["{set: {queue: it}}", "{tags: {add: [t]}}", "{close: true}",
                           "{set: {impact: high}}", "{acknowledge: false}",
                           "{notify: {template: ticket_notice, to: it-team}}"])


@st.composite
def rule_files(draw: st.DrawFn) -> str:
    out = []
    for i in range(draw(st.integers(1, 6))):
        fld = draw(st.sampled_from(sorted(FIELD_VALUES)))
        op, values = FIELD_VALUES[fld]
        value = json.dumps(draw(values))
        out.append(f"- name: rule {i}\n  on: [ticket.created, customer.replied]\n"
                   f"  if: {{{fld}: {{{op}: {value}}}}}\n  then: [{draw(ACTIONS)}]\n")
    return "".join(out)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=rule_files(), cut=st.integers(0, 400), junk=st.sampled_from(
    ["", ":", "{", "- ", "  bogus: 1\n", "\t", "[", "'", "then", "\n- name: rule 0\n"]))
def test_generated_files_load_and_mutants_load_or_fail_with_a_location(
        tmp_path: Path, text: str, cut: int, junk: str) -> None:
    path = tmp_path / "gen.yaml"
    path.write_text(text)
    assert len(load([path], DESK, TEMPLATES)) >= 1
    mutant = text[:cut] + junk + text[cut:]
    path.write_text(mutant)
    try:
        load([path], DESK, TEMPLATES)
    except RulesError as e:
        for problem in e.problems:
            assert re.match(rf"{re.escape(str(path.resolve()))}:\d+(:\d+)?: ", problem), problem


def test_the_example_desk_rules_load_and_route() -> None:
    from maildesk.config.load import load_settings
    example = Path(__file__).resolve().parent.parent / "config"
    cfg = load_settings(example / "maildesk.yaml")
    rs = load(cfg.rules, cfg.desk, TEMPLATES)
    raw = mail(subject="VPN is down since 8:00", sender="ceo@example.com")
    m = parse(raw, digest_of(raw))
    facts = facts_for(cfg.desk, ticket_row(tags=[]), m, datetime(2026, 11, 7, 3, 0,
                                                                 tzinfo=timezone.utc))
    names = [r.name for r, _a in rs.evaluate("ticket.created", facts).actions]
    assert names[0] == "it queue" and "outages are high-impact incidents" in names
    assert "vip senders" in names and "out-of-hours outages" in names


def test_daemon_reloads_changed_rules_and_keeps_the_old_ones_when_broken(
        daemon: Callable[..., Any], tmp_path: Path) -> None:
    import sqlite3
    import time as _time

    from conftest import wait_for
    from test_smtp import send

    def tagging(tag: str) -> str:
        return f"- {{name: tag it, on: ticket.created, then: [{{tags: {{add: [{tag}]}}}}]}}\n"
    rules = write(tmp_path, tagging("first"))
    d = daemon(rules=[str(rules)])
    db = tmp_path / "data" / "maildesk.db"

    def tags_of(n: int) -> list[str] | None:
        with sqlite3.connect(db, timeout=5) as c:
            row = c.execute("SELECT tags FROM tickets WHERE number = ?", (n,)).fetchone()
        return json.loads(row[0]) if row else None

    send(d.port, mail(message_id="<r1@c.test>"))
    assert wait_for(lambda: tags_of(1), what="ticket 1") == ["first"]
    rules.write_text("- {name: broken, on: ticket.created, if: {subjekt: x}, then: []}\n")
    wait_for(lambda: "keeping the 1 running rules" in d.log.read_text(), 30, "the refusal")
    assert f"{rules}:1:43: unknown field 'subjekt'" in d.log.read_text()
    send(d.port, mail(subject="two", message_id="<r2@c.test>"))
    assert wait_for(lambda: tags_of(2), what="ticket 2") == ["first"], "old rules still run"
    _time.sleep(0.05)
    rules.write_text(tagging("second"))
    wait_for(lambda: "rules reloaded: 1 rules" in d.log.read_text(), 30, "the reload")
    send(d.port, mail(subject="three", message_id="<r3@c.test>"))
    assert wait_for(lambda: tags_of(3), what="ticket 3") == ["second"]


def test_close_and_notify_the_assignee_an_address_and_the_requester(
        desk: Callable[[str], App]) -> None:
    app = desk("""\
        - name: thanks closes
          on: customer.replied
          if: {body: {matches: '^thanks,? (that|it) (worked|helped)'}}
          then:
            - close: true
            - notify: {template: ticket_notice, to: [assignee, audit@desk.test]}
        - name: route to bob
          on: ticket.created
          then:
            - set: {assignee: bob@desk.test}
            - notify: {template: refused, to: requester}
        """)
    ingest(app, [(mail(), PIPE)])
    ingest(app, [(mail(subject="Re: [MD-1] x", body="Thanks, that worked!\n"), PIPE)])
    t = show(app, "MD-1")
    assert (t["status"], t["assignee"]) == ("closed", "bob@desk.test")
    sent = outbox(app, "MD-1")
    assert ("refused", ["ana@customer.test"]) in sent
    assert ("ticket_notice", ["bob@desk.test"]) in sent, "an agent's own mail"
    assert ("ticket_notice", ["audit@desk.test"]) in sent


def test_each_rule_is_shown_at_its_own_line(desk_config: Callable[..., Path],
                                            tmp_path: Path) -> None:
    """A good file is read by the fast loader, which used to lose every position: all
    rules were at rules.yaml:1:1."""
    rules = write(tmp_path, """\
        # printers first
        - name: printers to facilities
          on: ticket.created
          if: {subject: {contains: printer}}
          then: [{set: {queue: facilities}}]

        -   name: never for printers
            on: ticket.created
            if: {body: {contains: 'no such words'}}
            then: [{set: {urgency: high}}]
        """)
    assert [r.origin for r in load([rules], DESK, set()).rules] == [
        f"{rules}:2:3", f"{rules}:7:5"]
    cfg = desk_config(rules=[str(rules)], desk=DESK.model_dump(mode="json"))
    eml = tmp_path / "m.eml"
    eml.write_bytes(mail())
    out = json.loads(run_cli("rules", "test", str(eml), "--format", "json", config=cfg).stdout)
    assert [v["at"] for v in out["rules"]] == [f"{rules}:2:3", f"{rules}:7:5"]
    text = run_cli("rules", "test", str(eml), config=cfg).stdout.decode()
    assert f"match    printers to facilities  ({rules}:2:3)" in text
