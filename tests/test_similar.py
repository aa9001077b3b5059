"""Similar tickets (issue 20): a new incident's notification to agents names the resolved
incidents whose opening mail is most alike, each with the first lines of the agent's
answer that resolved it. Through the real pipeline on SQLite and PostgreSQL."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from conftest import mail
from test_problems import PIPE, by_agent, sent, text

from maildesk.app import App
from maildesk.pipeline.run import ingest

DESK = {"queues": [{"name": "general", "group": "helpdesk"}],
        "addresses": ["support@localhost"],
        "agents": [{"name": "bob", "address": "bob@desk.test", "groups": ["helpdesk"]}],
        "groups": [{"name": "helpdesk"}]}
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def app(make_app: Callable[..., App], db_url: str) -> App:
    return make_app(db_url, desk=DESK)


def arrive(app: App, who: str, subject: str, body: str, at: datetime) -> None:
    ingest(app, [(mail(subject=subject, body=body, sender=who), PIPE)], now=at)


def notified(app: App, ref: str) -> str:
    return text([m for r, to, m in sent(app, "agent_notification") if r == ref][-1])


def history(app: App) -> None:
    """MD-1 a VPN case, resolved with an answer; MD-2 an invoice, resolved; MD-3 another
    VPN case, still open."""
    arrive(app, "ana@customer.test", "VPN client cannot connect",
           "The VPN client says the gateway is unreachable from the hotel.", T0)
    by_agent(app, "MD-1", "#status resolved\nReinstall the VPN client from the portal,\n"
                          "then reboot once.\n\nBob")
    arrive(app, "cy@customer.test", "Invoice 4411 is wrong",
           "The invoice charges 40 licences, we ordered 25.", T0)
    by_agent(app, "MD-2", "#status resolved\nA credit note for 15 licences is on its way.")
    arrive(app, "dee@customer.test", "VPN gateway unreachable",
           "My VPN client cannot reach the gateway since this morning.", T0)


def test_a_new_incident_names_the_resolved_ones_like_it_with_their_answer(app: App) -> None:
    history(app)
    arrive(app, "eli@customer.test", "VPN does not connect",
           "The VPN client cannot connect, it says gateway unreachable.", T0 + timedelta(hours=1))
    said = notified(app, "MD-4")
    assert "Resolved tickets like it:" in said
    assert "MD-1  VPN client cannot connect" in said
    assert "Reinstall the VPN client from the portal," in said and "then reboot once." in said
    assert "#status" not in said.split("Resolved tickets like it:")[1].split("wrote:")[0]
    assert "MD-2" not in said, "an invoice is not like it"
    assert "MD-3  VPN" not in said, "an open ticket resolved nothing yet"


def test_nothing_alike_names_nothing_and_show_0_turns_it_off(
        app: App, make_app: Callable[..., App], db_url: str) -> None:
    history(app)
    arrive(app, "eli@customer.test", "Parking permit",
           "Where do I apply for a space in the car park?", T0 + timedelta(hours=1))
    assert "Resolved tickets like it" not in notified(app, "MD-4")
    off = make_app(db_url, desk=DESK, similar={"show": 0})
    arrive(off, "fay@customer.test", "VPN does not connect",
           "The VPN client cannot connect, gateway unreachable.", T0 + timedelta(hours=2))
    assert "Resolved tickets like it" not in notified(off, "MD-5")


def test_a_ticket_resolved_meanwhile_is_found_once_the_vectors_are_ten_minutes_old(
        app: App) -> None:
    """The vectors are built once per ten minutes per process, not per mail: a ticket
    resolved just now is named from the next build on."""
    arrive(app, "ana@customer.test", "Printer offline", "The printer on floor 2 is offline.", T0)
    arrive(app, "cy@customer.test", "Scanner", "The scanner sends nothing.", T0)  # builds
    by_agent(app, "MD-1", "#status resolved\nPower-cycled the printer.")
    arrive(app, "dee@customer.test", "Printer is offline", "Our floor 2 printer shows offline.",
           T0 + timedelta(minutes=5))
    assert "MD-1  Printer offline" not in notified(app, "MD-3")
    arrive(app, "eli@customer.test", "printer offline again", "Floor 2 printer offline again.",
           T0 + timedelta(minutes=11))
    said = notified(app, "MD-4")
    assert "MD-1  Printer offline" in said and "Power-cycled the printer." in said


def test_another_process_on_the_desk_reads_the_vectors_and_a_broken_file_is_rebuilt(
        app: App, make_app: Callable[..., App], db_url: str) -> None:
    """A mail piped in by an MTA is a process of its own: it reads similar.npz rather than
    building the vectors again; a file it cannot read is built again, with a warning."""
    arrive(app, "ana@customer.test", "Printer offline", "The printer on floor 2 is offline.", T0)
    by_agent(app, "MD-1", "#status resolved\nPower-cycled the printer.")
    arrive(app, "cy@customer.test", "Scanner", "The scanner sends nothing.", T0)   # builds
    cache = app.settings.data_dir / "similar.npz"
    assert cache.exists()
    by_agent(app, "MD-2", "#status resolved\nRestarted the scanner.")
    other = make_app(db_url, desk=DESK)          # the next process: reads the file
    arrive(other, "dee@customer.test", "Scanner sends nothing", "The scanner sends nothing.",
           T0 + timedelta(minutes=2))
    assert "MD-2" not in notified(other, "MD-3"), "the file's vectors, not a new build"
    cache.write_bytes(b"not an npz archive")
    third = make_app(db_url, desk=DESK)
    arrive(third, "eli@customer.test", "Scanner sends nothing", "Our scanner sends nothing.",
           T0 + timedelta(minutes=3))
    said = notified(third, "MD-4")
    assert "MD-2  Scanner" in said and "Restarted the scanner." in said
