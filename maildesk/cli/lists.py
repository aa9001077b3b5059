"""Looking at the desk: tickets and the quarantine (the outbox: outbox.py).

Each command imports the queries and the tables (SQLAlchemy), and rich, when it runs:
`maildesk tickets --help` and `quarantine --help` start in a tenth of the time.
"""
from __future__ import annotations

import email
import os
import sys
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import click

from ..store.rows import SLA_FILTERS, STATUSES
from .context import Obj
from .output import (
    EX_DATAERR,
    EX_NOINPUT,
    EX_USAGE,
    FORMAT,
    ROW_ID,
    TEXT_FORMAT,
    emit_json,
    emit_table,
    fail,
    minute,
    safe,
    second,
    stdout_console,
    write_raw,
)

if TYPE_CHECKING:
    from ..store.models import Inbound


@click.group()
def tickets() -> None:
    """List and show tickets."""


def _statuses(_ctx: click.Context, _param: click.Parameter, given: tuple[str, ...]
              ) -> tuple[str, ...]:
    """--status open --status pending, or --status open,pending."""
    said = tuple(dict.fromkeys(w.strip().lower() for g in given for w in g.split(",")
                               if w.strip()))
    wrong = [w for w in said if w not in STATUSES]
    if wrong:
        raise click.BadParameter(f"{', '.join(wrong)} (statuses: {', '.join(STATUSES)})")
    return said


def _day(value: datetime | None, after: int = 0) -> datetime | None:
    """A date the operator typed as the UTC midnight it starts (after=1: it ends)."""
    return None if value is None else \
        value.replace(tzinfo=timezone.utc) + timedelta(days=after)


LIST_LIMIT = 50


@tickets.command("list")
@click.option("--status", "statuses", multiple=True, callback=_statuses, metavar="STATUS",
              help=f"Only tickets in this status ({', '.join(STATUSES)}); repeat it or "
                   "give a comma list for several.")
@click.option("--requester", metavar="ADDR", help="Only tickets this address opened.")
@click.option("--queue", metavar="NAME", help="Only tickets in this queue.")
@click.option("--assignee", metavar="NAME", help="Only tickets assigned to this agent.")
@click.option("--unassigned", is_flag=True, help="Only tickets nobody is assigned.")
@click.option("--search", metavar="TEXT",
              help="Only tickets with a mail (customer's, agent's or note) whose subject "
                   "or text holds every word of TEXT.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), metavar="DATE",
              help="Only tickets created on or after this day (UTC).")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), metavar="DATE",
              help="Only tickets created on or before this day (UTC).")
@click.option("--sla", "sla", type=click.Choice(SLA_FILTERS),
              help="Only tickets with a live SLA clock that is breached, or at risk "
                   "(warned, not yet breached).")
@click.option("--limit", type=click.IntRange(0, ROW_ID.max), default=LIST_LIMIT,
              show_default=True, help="At most this many (0: all); a note on stderr says "
                                      "how many more matched and the command for the "
                                      "next page.")
@click.option("--after", metavar="REF",
              help="The next page: the tickets after REF, the last ticket of the page "
                   "before, with the same filters.")
@FORMAT
@click.pass_obj
def tickets_list(obj: Obj, statuses: tuple[str, ...], requester: str | None,
                 queue: str | None, assignee: str | None, unassigned: bool,
                 search: str | None, since: datetime | None, until: datetime | None,
                 sla: str | None, limit: int, after: str | None, fmt: str) -> None:
    """Tickets, newest first, a page at a time."""
    from dataclasses import replace

    from ..tickets.listing import REF, Filters, count_tickets, list_tickets, position
    if assignee and unassigned:
        fail("--assignee and --unassigned exclude each other", EX_USAGE)
    if after is not None and not REF.fullmatch(after):
        fail(f"--after {after!r} is not a ticket reference (like MD-42): it names the last "
             "ticket of the page before", EX_USAGE)
    where = None
    if sla:     # the SLA module (calendars, holidays) only for the listing that asks
        from ..sla.views import sla_filter
        where = sla_filter(sla, datetime.now(timezone.utc))
    filters = Filters(statuses=statuses, requester=requester, queue=queue, assignee=assignee,
                      unassigned=unassigned, search=search, since=_day(since),
                      until=_day(until, after=1), where=where)
    with obj.reader().connect() as conn:
        if after is not None:
            at = position(conn, after)
            if at is None:
                fail(f"--after {after}: no such ticket (it names the last ticket of the page "
                     "before; start again without --after)", EX_NOINPUT)
            filters = replace(filters, after=at)
        rows = list_tickets(conn, filters, limit)
        more = count_tickets(conn, filters) - len(rows) if limit and len(rows) == limit \
            else 0
    if fmt == "json":     # the bare list, as every listing: a script's cursor is its last ref
        emit_json(rows)
    else:
        emit_table([r | {"created_at": minute(r["created_at"]),
                         "updated_at": minute(r["updated_at"])} for r in rows],
                   ["ref", "status", "priority", "queue", "assignee", "requester", "subject",
                    "message_count", "created_at", "updated_at"], empty="no tickets")
    if more:
        click.echo(f"{more} more matched; the next page: "
                   f"{_next_page(click.get_current_context(), rows[-1]['ref'])}", err=True)


def _next_page(ctx: click.Context, after: str) -> str:
    """The command line of the page after this one: this one's options as given (the
    configuration too), --after the page's last ticket."""
    import shlex

    from click.core import ParameterSource
    words = ["maildesk"]
    root = ctx.find_root()
    if root.params.get("config") and \
            root.get_parameter_source("config") is ParameterSource.COMMANDLINE:
        words += ["--config", root.params["config"]]
    words += ["tickets", "list"]
    for p in ctx.command.params:
        value = ctx.params.get(p.name or "")
        if not isinstance(p, click.Option) or p.name == "after" or \
                ctx.get_parameter_source(p.name or "") is not ParameterSource.COMMANDLINE:
            continue
        if p.is_flag:
            words.append(p.opts[0])
        else:
            shown = ",".join(value) if isinstance(value, tuple) else \
                f"{value:%Y-%m-%d}" if isinstance(value, datetime) else str(value)
            words += [p.opts[0], shown]
    return shlex.join([*words, "--after", after])


@tickets.command("show")
@click.argument("ref")
@TEXT_FORMAT
@click.pass_obj
def tickets_show(obj: Obj, ref: str, fmt: str) -> None:
    """One ticket with its messages and events."""
    from ..tickets.views import show_ticket
    app = obj.app(existing=True)
    with app.sessions() as session:
        data = show_ticket(session, ref, app.blobs)
    if data is None:
        fail(f"no ticket {ref}", EX_NOINPUT)
    assert data is not None
    if fmt == "json":
        emit_json(data)
    else:
        _print_ticket(data)


# the width of the field names `tickets show` prints in a column, the longest with a space
LABEL = len("resolved_by: ")
# a ticket's fields that most tickets leave empty: shown only when they hold something
# (a problem's record, an incident's problem, tags)
WHEN_SET = ("problem", "root_cause", "workaround", "known_error", "resolved_by", "tags")


def _print_ticket(t: dict[str, Any]) -> None:
    from rich.text import Text

    from ..store.blobs import REMOVED_BY
    from .blobs import REPAIR_HINT
    console = stdout_console(highlight=False)
    console.print(Text(t["ref"], style="bold") + "  " + safe(t["subject"]))
    for k in ("status", "type", "priority", "category", "queue", "assignee", "requester",
              "cc", "linked_to", "created_at", "updated_at", *WHEN_SET):
        if k in WHEN_SET and not t[k]:
            continue
        v = second(t[k]) if k.endswith("_at") else "yes" if t[k] is True else t[k]
        shown = ", ".join(v) if isinstance(v, list) else v or "-"
        console.print(safe(f"  {k + ':':<{LABEL}}{shown}"), markup=False)
    # the conversation is what people wrote; our acknowledgements, relays and notices to
    # agents are listed with it but counted apart
    console.print(f"  {'messages:':<{LABEL}}{t['message_count']} written, "
                  f"{t['notice_count']} notices sent", markup=False)
    for m in t["messages"]:
        unproven = " (sender not verified)" if m["sender_verified"] is False else ""
        if m["visibility"] == "internal":
            unproven += " [internal: never sent to the customer]"
        console.rule(Text(safe(f"{m['direction']} {second(m['date'])} {m['from']}")
                          + unproven),
                     align="left")
        if m["stored"] == "removed":
            console.print(f"  [original removed: {REMOVED_BY}]",
                          markup=False, style="dim")
        elif m["stored"] != "intact":
            console.print(f"  [original {m['stored']}: {REPAIR_HINT}]", markup=False,
                          style="bold red")
        console.print(safe(m["text"].rstrip()), markup=False)
        for a in m["attachments"]:
            console.print(safe(f"  [attachment] {a['filename']} "
                               f"({a['content_type']}, {a['size']} bytes)"
                               + ("" if a["stored"] == "intact" else f" [{a['stored']}]")),
                          markup=False, style=None if a["stored"] == "intact" else "bold red")
    console.rule("events", align="left")
    for e in t["events"]:     # one line each, never wrapped: a pipe to grep reads it whole
        console.print(safe(f"  {second(e['at'])}  {e['kind']:<26} {e['actor'] or ''}"),
                      markup=False,
                      soft_wrap=True)
        said = _event_said(e["kind"], e["data"] or {})
        if said:
            console.print(safe(f"      {said}"), markup=False, soft_wrap=True)


def _event_said(kind: str, data: dict[str, Any]) -> str:
    """What an event changed, told whom, why, and which rules it matched, in one line;
    and what the record of a few kinds holds that nothing else shows: the triage model's
    prediction on a new ticket, the incidents a resolved problem resolved, a merge."""
    parts = []
    if "field" in data and (change := field_change(data)):
        parts.append(change)
    if data.get("template"):
        parts.append(f"{data['template']} to {', '.join(data.get('to') or []) or '-'}")
    if "field" in data and (data.get("rule") or data.get("agent")):   # why: who asked
        parts.append(f"by rule {data['rule']}" if data.get("rule")
                     else f"after agent {data['agent']}'s reply" if data.get("after") == "reply"
                     else f"by agent {data['agent']}'s command")
    if data.get("predicted"):
        parts.append(_predicted(data["predicted"]))
    if kind == "problem.resolved":
        parts.append(f"resolved: {_value(data.get('resolved') or None)}")
        if data.get("left"):
            parts.append(f"left open: {_value(data['left'])}"
                         + (f" ({data['why_left']})" if data.get("why_left") else ""))
    if kind == "ticket.merged":
        parts.append(merged(data))
    if data.get("follows"):
        parts.append(f"follows {data['follows']}, which was closed")
    if data.get("tag_ignored"):
        parts.append(f"tag ignored: {data['tag_ignored']}")
    if data.get("reason"):
        parts.append(str(data["reason"]))
    hits = (data.get("rules") or {}).get("hits")
    if hits:
        parts.append("rules matched: " + ", ".join(hits))
    return "; ".join(parts)[:500]


def field_change(data: dict[str, Any]) -> str | None:
    """A `ticket.updated` event's change in words, or None for linked_to: its values are row
    ids, and the `ticket.merged` (or `ticket.created`'s follows) beside it names the ticket
    by its reference."""
    if data["field"] == "linked_to":
        return None
    return f"{data['field']}: {_value(data.get('old'))} -> {_value(data.get('new'))}"


def _predicted(guess: dict[str, Any]) -> str:
    """`predicted: category printing (0.93), queue it (0.81)`: each field the model
    predicted, with its confidence, in the order of the rules' facts."""
    from ..core.triage import confidence_key
    from ..rules.vocabulary import FIELDS, PREDICTED
    fields = [name.partition(".")[2] for name in PREDICTED if FIELDS[name] == "text"]
    return "predicted: " + ", ".join(
        f"{f} {guess[f]} ({float(guess.get(confidence_key(f)) or 0):.2f})"
        for f in fields if f in guess)


def merged(data: dict[str, Any]) -> str:
    """A `ticket.merged` event in words, from either side: the ticket merged away names
    where it went (`into`), the one that took it what it took (`absorbed`)."""
    moved = f"{data.get('moved', 0)} messages moved"
    if data.get("into"):
        return f"merged into {data['into']} ({moved})"
    added = f"; cc added: {_value(data['cc_added'])}" if data.get("cc_added") else ""
    return f"absorbed {data.get('absorbed')} ({moved}{added})"


def _value(v: Any) -> str:
    return ", ".join(map(str, v)) if isinstance(v, list) else "-" if v is None else str(v)


# mail kept without a ticket: unreadable or crashed (quarantined), or a machine's (the rest)
HELD = ("quarantined", "spam", "loop", "bounce", "auto-reply", "bulk", "complaint")
# the rest of the mail that made no ticket, each kept as the record of what became of it:
# a mail that came again, one a stage refused, a rating, a status request, a requester's
# "solved", a survey opt-out, an agent's question answered, an answer to a proposal; and
# deleted, held mail whose bytes a person removed. retry, release and delete take only HELD.
SETTLED = ("duplicate", "refused", "rating", "status", "solved", "opted-out", "answered",
           "proposal", "deleted")
# a row in none of these states is kept without a ticket: `--state all` and `show` read it
# (a state a future stage adds included, named or not)
NOT_KEPT = ("ticketed", "queued", "released")


@click.group()
def quarantine() -> None:
    """Mail kept without a ticket: unreadable mail, and (with --state) spam, loops,
    bounces, auto-replies, list mail, and the settled: duplicates, ratings, status
    requests and the rest. Nothing here is lost: show, retry, release or delete it."""


def _held(session: Any, ids: tuple[int, ...], kept: bool = False) -> list[Inbound]:
    """The rows of ids in a held state; kept: in any state of mail without a ticket."""
    from sqlalchemy import select

    from ..store.models import Inbound
    state = Inbound.state.not_in(NOT_KEPT) if kept else Inbound.state.in_(HELD)
    return list(session.scalars(select(Inbound).where(Inbound.id.in_(ids), state)
                                .order_by(Inbound.id)))


def _requeue(obj: Obj, ids: tuple[int, ...], state: str, verb: str) -> None:
    """Back in the inbound queue: `queued` for the pipeline as it is, `released` for a
    person's ticket whatever the checks say."""
    app = obj.app(existing=True)
    with app.sessions.begin() as session:
        rows = _held(session, ids)
        for r in rows:
            r.state, r.reason = state, None
    _all_found(len(rows), len(ids), verb)


def _all_found(found: int, asked: int, verb: str) -> None:
    click.echo(f"{verb} {found} of {asked}")
    if found != asked:
        fail(f"{asked - found} of the ids are not held mail (see `maildesk quarantine list "
             f"--state all`)", EX_NOINPUT)


@quarantine.command("list")
@click.option("--state", "state", type=click.Choice([*HELD, *SETTLED, "all"]),
              default="quarantined", show_default=True,
              help="Which mail kept without a ticket; all: every kind, the settled too "
                   "(duplicates, ratings, status requests, deleted ...).")
@FORMAT
@click.pass_obj
def quarantine_list(obj: Obj, state: str, fmt: str) -> None:
    """Held mail with the reason it is held and where its raw bytes are."""
    from sqlalchemy import select

    from ..store.models import Inbound
    app = obj.app(existing=True)
    which = Inbound.state.not_in(NOT_KEPT) if state == "all" else Inbound.state == state
    with app.sessions() as session:
        rows = [{"id": r.id, "state": r.state, "received_at": r.received_at.isoformat(),
                 "source": r.source, "origin": r.origin, "mail_from": r.mail_from,
                 "size": r.size, "reason": r.reason,
                 "raw": app.blobs.locate(r.digest, session.connection())}
                for r in session.scalars(select(Inbound).where(which).order_by(Inbound.id))]
    if fmt == "json":
        emit_json(rows)
    else:
        emit_table(rows, ["id", "state", "received_at", "source", "mail_from", "reason"],
                   empty="the quarantine is empty" if state == "quarantined"
                   else f"no mail in state {state}")


@quarantine.command("show")
@click.argument("id_", metavar="ID", type=ROW_ID)
@click.option("--raw", is_flag=True, help="Write the mail's bytes as they arrived to stdout.")
@TEXT_FORMAT
@click.pass_obj
def quarantine_show(obj: Obj, id_: int, raw: bool, fmt: str) -> None:
    """One held mail: why it is held, its envelope and its headers (or --raw bytes)."""
    from ..store.blobs import REMOVED_BY, BlobError, BlobRemoved
    from .blobs import REPAIR_HINT
    app = obj.app(existing=True)
    with app.sessions() as session:
        held = _held(session, (id_,), kept=True)
        if not held:
            fail(f"no mail kept without a ticket with id {id_} (see `maildesk quarantine "
                 "list --state all`)", EX_NOINPUT)
        r = held[0]
        try:
            data: bytes | None = app.blobs.get(r.digest, session.connection())
        except BlobRemoved as e:
            if raw:
                fail(f"held mail {id_}: {e}; its row is all there is", EX_NOINPUT)
            data = None
        except BlobError as e:
            fail(f"{e}; {REPAIR_HINT}", EX_DATAERR)
        where = app.blobs.locate(r.digest, session.connection())
    if raw:
        assert data is not None
        write_raw(data)
        return
    headers = header_lines(data) if data is not None else []
    info = {"id": r.id, "state": r.state, "reason": r.reason, "source": r.source,
            "origin": r.origin, "mail_from": r.mail_from, "rcpt_to": list(r.rcpt_to),
            "received_at": r.received_at.isoformat(), "size": r.size, "attempts": r.attempts,
            "raw": where, "traceback": r.traceback,
            "headers": headers}
    if fmt == "json":
        emit_json(info)
        return
    console = stdout_console(soft_wrap=True, highlight=False)
    for k in ("id", "state", "reason", "source", "origin", "mail_from", "rcpt_to",
              "received_at", "size", "attempts", "raw"):
        console.print(f"[bold]{k.replace('_', ' ')}:[/bold] {_show(info[k])}", markup=True)
    if data is None:
        console.print(f"[original removed: {REMOVED_BY}]", markup=False, style="dim")
    console.print()
    for k, v in headers:
        console.print(safe(f"{k}: {v}"), markup=False)
    if r.traceback:
        console.print("\n[bold]traceback[/bold] (a crash of maildesk or a library on this "
                      "mail: please report it with the mail):", markup=True)
        console.print(safe(r.traceback.rstrip()), markup=False)


def header_lines(data: bytes) -> list[list[str]]:
    """A mail's header fields as [name, value] pairs, each value on one line and cut short:
    what `show` commands print of a stored mail (hostile input: bounded, no line breaks)."""
    from ..mail.headers import one_line
    head = email.message_from_bytes(data.split(b"\n\n", 1)[0][:65536] + b"\n\n")
    return [[k, one_line(str(v), 300)] for k, v in head.items()[:60]]


def _show(v: Any) -> str:
    """One field of `show` on its line: what the mail or its envelope carried neutralised,
    a line break too (it would start a line of the sender's making)."""
    from rich.markup import escape
    text = ", ".join(v) if isinstance(v, list) else "-" if v is None else str(v)
    return escape(safe(text).replace("\n", "\ufffd"))


@quarantine.command("retry")
@click.argument("ids", nargs=-1, type=ROW_ID, required=True)
@click.pass_obj
def quarantine_retry(obj: Obj, ids: tuple[int, ...]) -> None:
    """Run held mail through the pipeline again (after fixing the config, the rules or
    a limit); the daemon or `maildesk ingest` takes it."""
    _requeue(obj, ids, "queued", "re-queued")


@quarantine.command("release")
@click.argument("ids", nargs=-1, type=ROW_ID, required=True)
@click.pass_obj
def quarantine_release(obj: Obj, ids: tuple[int, ...]) -> None:
    """Make tickets of held mail as a person's mail: no spam, loop or auto-reply check,
    and mail that cannot be read becomes a ticket with the original attached."""
    _requeue(obj, ids, "released", "released")


@quarantine.command("delete")
@click.argument("ids", nargs=-1, type=ROW_ID, required=True)
@click.option("--yes", is_flag=True, help="Do not ask (needed when not on a terminal).")
@click.pass_obj
def quarantine_delete(obj: Obj, ids: tuple[int, ...], yes: bool) -> None:
    """Delete the bytes of held mail (malware, personal data); the row stays, marked
    deleted, as the record that the mail was accepted and by whom it was removed."""
    if not yes:
        if not sys.stdin.isatty():
            fail("refusing to delete without --yes when not on a terminal", EX_USAGE)
        click.confirm(f"delete the raw mail of {len(ids)} held message(s)?", abort=True)
    from ..store.blobs import NO_BLOB
    from ..store.references import referrers
    app = obj.app(existing=True)
    who = os.environ.get("SUDO_USER") or os.environ.get("USER") or "an operator"
    with app.sessions.begin() as session:
        rows = _held(session, ids)
        for r in rows:
            uses = referrers(session.connection(), [r.digest]).get(r.digest, [])
            if not [u for u in uses if (u["kind"], u["id"]) != ("inbound", r.id)]:
                app.blobs.forget(r.digest, session.connection())
            r.digest = NO_BLOB      # removed on purpose, as retention marks it: no damage
            r.reason = f"deleted by {who} at {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC " \
                       f"(was {r.state}: {r.reason})"[:2000]
            r.state = "deleted"
    _all_found(len(rows), len(ids), "deleted")


COMMANDS = [quarantine]     # `tickets` comes with act.py's commands (main.LAZY)
