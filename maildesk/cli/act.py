"""Acting on tickets from the command line as an agent: assign, status, close, note,
reply, merge, split; and problems: link an incident (problem), a problem's record (root-cause,
workaround, known-error).

Each command writes the mail the agent would write (`#command` lines, then the
text, from the agent's address to the ticket's reply address made for them) and
runs it through the ingest pipeline marked as the local operator's
(pipeline.run.act): the same stages, events, rules and notices as that mail,
and the ticket's history names `agent:NAME`. The commands are checked first
with the mail commands' own checker, so a mistake is one line here, not a
refusal mailed to the agent.
"""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import click

from .context import Obj
from .lists import field_change, merged, tickets
from .output import EX_NOINPUT, EX_NOUSER, EX_SOFTWARE, EX_USAGE, emit_json, fail

if TYPE_CHECKING:
    from ..app import App
    from ..config.schema import Agent, Desk
    from ..pipeline.driver import Summary

AS = click.option("--as", "who", required=True, envvar="MAILDESK_AGENT", metavar="NAME",
                  help="The agent you act as: a name (or address) in desk.agents, or "
                       "$MAILDESK_AGENT. An unknown agent exits 67.")
FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                      show_default=True, help="text: what changed, one line; json: the "
                                              "ticket afterwards, as `tickets show` gives it.")


def as_agent(desk: Desk, who: str) -> Agent:
    agent = desk.agent_named(who)
    if agent is None:
        fail(f"no agent {who!r} (agents: {', '.join(a.name for a in desk.agents) or 'none'}"
             f"; see desk.agents in maildesk.yaml)", EX_NOUSER)
    return agent


def act_as(app: App, agent: Agent, to: str, subject: str, body: str) -> Summary:
    """The mail agent would write to `to`, run through the pipeline as the local
    operator's (pipeline.run.act)."""
    import getpass
    from email.message import EmailMessage
    from email.utils import format_datetime, make_msgid

    from ..intake.inbound import Envelope
    from ..pipeline.run import act
    m = EmailMessage()
    m["From"] = f"{agent.display_name or agent.name} <{agent.address}>"
    m["To"] = to
    m["Subject"] = subject
    m["Date"] = format_datetime(datetime.now(timezone.utc))
    m["Message-ID"] = make_msgid("cli", domain=app.settings.desk.domain)
    m.set_content(body)
    return act(app, m.as_bytes(), Envelope("cli", agent.address, (to,),
                                           origin=f"cli {getpass.getuser()} as {agent.name}"),
               agent.name)


def _text(text: str | None) -> str:
    """TEXT as given, or stdin for `-` (or nothing given)."""
    if text is None or text == "-":
        text = sys.stdin.read()
    if not text.strip():
        fail("no text: give it as an argument, or on stdin with -", EX_USAGE)
    return text


def _run(obj: Obj, ref: str, who: str, commands: list[str], text: str, fmt: str) -> None:
    """Check the commands, write the agent's mail, run it, and say what it changed."""
    # the mail side is loaded here, not with the module: `tickets list` runs without it,
    # and `tickets --help` without the queries too
    from ..kb.library import Library
    from ..mail.headers import one_line
    from ..tickets.commands import plan
    from ..tickets.problems import problem_errors
    from ..tickets.refs import token_address
    from ..tickets.views import show_ticket
    desk = obj.settings.desk
    agent = as_agent(desk, who)
    # none of these commands is `#kb`: no knowledge base is needed to check them
    asked = plan(list(enumerate(commands, 1)), desk, agent, desk.ref_prefix, Library())
    if asked.errors:
        fail(asked.errors[0].split(": ", 2)[-1], EX_USAGE)
    app = obj.app(existing=True)
    with app.sessions() as session:
        before = show_ticket(session, ref)
        if before is None:
            fail(f"no ticket {ref}", EX_NOINPUT)
        into = show_ticket(session, asked.merge_into) if asked.merge_into else None
        if asked.merge_into and into is None:
            fail(f"no ticket {asked.merge_into}", EX_NOINPUT)
        if asked.merge_into == before["ref"]:
            fail(f"{before['ref']} cannot be merged into itself", EX_USAGE)
        named = show_ticket(session, asked.problem) if asked.problem else None
        wrong = problem_errors(asked, before["ref"], before["type"], before["workaround"],
                               (named["ref"], named["type"]) if named else None,
                               merge=(into["ref"], into["type"]) if into else None)
        if wrong:
            fail(wrong[0], EX_USAGE)
    support = (desk.queue(before["queue"]).addresses or desk.addresses)[0]
    to = token_address(app.secrets[0], support, before["ref"], agent.address)
    body = "\n".join(commands) + ("\n\n" if commands else "") + text.strip() + "\n"
    done = act_as(app, agent, to, f"Re: [{before['ref']}] {one_line(before['subject'] or '', 200)}",
                  body)
    if done.follow_ups != 1:
        fail(f"{before['ref']}: the pipeline did not take the command ({done.as_dict()}); "
             "see `maildesk quarantine list --state all`", EX_SOFTWARE)
    with app.sessions() as session:
        after = show_ticket(session, before["ref"])
    assert after is not None
    refused = [e for e in after["events"][len(before["events"]):]
               if e["kind"] == "commands.refused"]
    if refused:     # what only the desk's data can check (#split's message): nothing ran
        fail(refused[0]["data"]["errors"][0], EX_NOINPUT)
    if fmt == "json":
        emit_json(after)
    else:
        click.echo(f"{after['ref']}: {_changed(after['events'][len(before['events']):])}")


def _changed(events: list[dict[str, Any]]) -> str:
    """What the action's events did, in one line."""
    said = []
    for e in events:
        d = e["data"] or {}
        if e["kind"] == "ticket.updated":
            if change := field_change(d):
                said.append(change)
        elif e["kind"] == "note.added":
            said.append("internal note added")
        elif e["kind"] == "agent.replied" and not d.get("silent"):
            said.append("reply relayed")
        elif e["kind"] == "ticket.split" and d.get("into"):
            said.append(f"{d.get('message_id')} split off into {d['into']}")
        elif e["kind"] == "ticket.merged" and d.get("into"):
            said.append(merged(d))
        elif e["kind"] == "notification.queued":
            said.append(f"{d.get('template')} queued to {', '.join(d.get('to') or [])}")
    return "; ".join(said) or "nothing changed"


@tickets.command("assign")
@click.argument("ref")
@click.argument("agent", metavar="AGENT|me|none")
@AS
@FORMAT
@click.pass_obj
def tickets_assign(obj: Obj, ref: str, agent: str, who: str, fmt: str) -> None:
    """Assign a ticket to an agent (me: the one you act as; none: nobody), as `#assign`."""
    _run(obj, ref, who, [f"#assign {agent}"], "", fmt)


@tickets.command("status")
@click.argument("ref")
@click.argument("status", metavar="STATUS")
@AS
@FORMAT
@click.pass_obj
def tickets_status(obj: Obj, ref: str, status: str, who: str, fmt: str) -> None:
    """Set a ticket's status (open, pending, resolved, closed), as `#status`."""
    _run(obj, ref, who, [f"#status {status}"], "", fmt)


@tickets.command("close")
@click.argument("ref")
@AS
@FORMAT
@click.pass_obj
def tickets_close(obj: Obj, ref: str, who: str, fmt: str) -> None:
    """Close a ticket, as `#status closed`."""
    _run(obj, ref, who, ["#status closed"], "", fmt)


@tickets.command("note")
@click.argument("ref")
@click.argument("text", required=False, metavar="[TEXT|-]")
@AS
@FORMAT
@click.pass_obj
def tickets_note(obj: Obj, ref: str, text: str | None, who: str, fmt: str) -> None:
    """Add an internal note (TEXT, or stdin): agents see it, the customer never does."""
    _run(obj, ref, who, ["#note"], _text(text), fmt)


@tickets.command("reply")
@click.argument("ref")
@click.argument("text", required=False, metavar="[TEXT|-]")
@AS
@FORMAT
@click.pass_obj
def tickets_reply(obj: Obj, ref: str, text: str | None, who: str, fmt: str) -> None:
    """Reply to the customer (TEXT, or stdin): relayed from the desk's address, as an
    agent's mail reply is."""
    _run(obj, ref, who, [], _text(text), fmt)


@tickets.command("merge")
@click.argument("ref")
@click.argument("into", metavar="INTO_REF")
@AS
@FORMAT
@click.pass_obj
def tickets_merge(obj: Obj, ref: str, into: str, who: str, fmt: str) -> None:
    """Merge a ticket into another, as `#merge`: it is closed and linked to INTO_REF."""
    _run(obj, ref, who, [f"#merge {into}"], "", fmt)


@tickets.command("split")
@click.argument("ref")
@click.argument("message_id", metavar="MESSAGE_ID")
@AS
@FORMAT
@click.pass_obj
def tickets_split(obj: Obj, ref: str, message_id: str, who: str, fmt: str) -> None:
    """Split a customer's message off a ticket into a new one, as `#split MESSAGE_ID`:
    the message and its attachments move there, its sender the new ticket's requester."""
    _run(obj, ref, who, [f"#split {message_id}"], "", fmt)


@tickets.command("problem")
@click.argument("ref")
@click.argument("problem", metavar="new|PROBLEM_REF|none")
@AS
@FORMAT
@click.pass_obj
def tickets_problem(obj: Obj, ref: str, problem: str, who: str, fmt: str) -> None:
    """Link an incident to a problem, as `#problem`: new opens a problem ticket for it
    (assigned to you), PROBLEM_REF names one, none unlinks it."""
    _run(obj, ref, who, [f"#problem {problem}"], "", fmt)


@tickets.command("root-cause")
@click.argument("ref")
@click.argument("text")
@AS
@FORMAT
@click.pass_obj
def tickets_root_cause(obj: Obj, ref: str, text: str, who: str, fmt: str) -> None:
    """Set a problem's root cause (one line), as `#root-cause`."""
    _run(obj, ref, who, [f"#root-cause {_line(text)}"], "", fmt)


@tickets.command("workaround")
@click.argument("ref")
@click.argument("text")
@AS
@FORMAT
@click.pass_obj
def tickets_workaround(obj: Obj, ref: str, text: str, who: str, fmt: str) -> None:
    """Set a problem's workaround (one line), as `#workaround`; a known error's linked
    open incidents' requesters get the new one."""
    _run(obj, ref, who, [f"#workaround {_line(text)}"], "", fmt)


@tickets.command("known-error")
@click.argument("ref")
@click.option("--off", is_flag=True, help="No longer a known error.")
@AS
@FORMAT
@click.pass_obj
def tickets_known_error(obj: Obj, ref: str, off: bool, who: str, fmt: str) -> None:
    """Mark a problem with a workaround a known error, as `#known-error`: the requesters of
    its linked open incidents get the workaround."""
    _run(obj, ref, who, ["#known-error off" if off else "#known-error"], "", fmt)


def _line(text: str) -> str:
    """A command's text on its one line: a command ends at the line's end."""
    line = " ".join(text.split())
    if not line:
        fail("no text", EX_USAGE)
    return line


COMMANDS = [tickets]     # lists.py's group, with the commands above joined to it
