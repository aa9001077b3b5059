"""The knowledge base and self-service, played against a real `maildesk serve` with real
SMTP, on SQLite and PostgreSQL: an acknowledgement that suggests an article, the click that
resolves the ticket, a status request, an article added while the daemon runs, an agent's
#kb and #kb new, and the deflection in the report. What people read is read from the
outbox maildir."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from conftest import Daemon, wait_for
from test_first_day import Desk, a_mail, reply_to, text

CUSTOMER = "ana@customer.test"
BOB = "bob@desk.test"


def article(folder: Path, slug: str, title: str, body: str) -> None:
    (folder / f"{slug}.md").write_text(f"---\ntitle: {title}\nstatus: published\n---\n{body}\n")


def test_suggest_solve_status_reload_and_report(daemon: Callable[..., Daemon], db_url: str,
                                               tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    article(kb, "vpn-password", "Reset your VPN password",
            "Open https://vpn.example.org/reset and follow the link we mail you; the new VPN "
            "password works after five minutes.")
    article(kb, "printer-jam", "Clear a printer paper jam",
            "Open tray 2 and pull the jammed paper out slowly.")
    desk = Desk(daemon(db_url, desk={"agents": [{"name": "bob", "address": BOB,
                                                 "queues": ["general"]}]},
                       kb={"folder": str(kb), "threshold": 1.0}))

    checked = desk.cli("config", "check")
    assert checked.returncode == 0, "the running daemon of this configuration is no obstacle"
    assert b"2 articles" in checked.stdout
    desk.send(CUSTOMER, "support@localhost", a_mail(
        CUSTOMER, "support@localhost", "VPN password refused",
        "Since this morning my VPN password is refused."))
    ack = desk.next_mail(CUSTOMER, "the acknowledgement")
    assert "Reset your VPN password" in text(ack) and "vpn.example.org/reset" in text(ack)
    notice = desk.next_mail(BOB, "the new-ticket notice")
    assert "Suggested to the customer: vpn-password" in text(notice)

    solved = re.search(r"support\+solved-md-1-1-[a-z2-7]+@localhost", text(ack))
    assert solved, text(ack)
    desk.send(CUSTOMER, solved.group(0), a_mail(CUSTOMER, solved.group(0), "Solved", ""))
    told = desk.next_mail(BOB, "the news that an article solved MD-1")
    assert "vpn-password" in text(told) and "[MD-1]" in told["Subject"]
    shown = json.loads(desk.cli("tickets", "show", "MD-1", "--format", "json").stdout)
    assert shown["status"] == "resolved"

    desk.send(CUSTOMER, "support+status@localhost", a_mail(
        CUSTOMER, "support+status@localhost", "what is open?", "Hello"))
    status = desk.next_mail(CUSTOMER, "the status answer")
    assert "MD-1" in text(status) and "resolved" in text(status)

    article(kb, "guest-wifi", "Guest Wi-Fi for visitors",
            "Visitors join the network GUEST; the guest Wi-Fi needs no password.")
    # within 2 s of the change; a mail taken sooner is answered from what was loaded
    wait_for(lambda: "knowledge base reloaded: 3 articles" in desk.d.log.read_text(), 30,
             "the daemon to load the new article")
    desk.send(CUSTOMER, "support@localhost", a_mail(
        CUSTOMER, "support@localhost", "Guest wifi for a visitor",
        "How does a visitor get on the guest wifi?"))
    second = desk.next_mail(CUSTOMER, "the acknowledgement of MD-2")
    assert "Guest Wi-Fi for visitors" in text(second), "an article added while it runs"

    notice = desk.next_mail(BOB, "the new-ticket notice of MD-2")
    desk.send(BOB, reply_to(notice), a_mail(
        BOB, reply_to(notice), "Re: " + notice["Subject"],
        "#kb printer-jam\n#kb new\nThe visitor asks at the front desk for the GUEST "
        "password card.", answering=notice))
    relayed = desk.next_mail(CUSTOMER, "bob's answer with an article")
    assert text(relayed).startswith("The visitor asks at the front desk")
    assert "Clear a printer paper jam" in text(relayed) and "tray 2" in text(relayed)
    drafts = list((kb / "drafts").glob("*.md"))
    assert len(drafts) == 1 and "source: MD-2" in drafts[0].read_text()
    assert "status: draft" in drafts[0].read_text()

    report = json.loads(desk.cli("report", "--format", "json").stdout)
    total = report["rows"][-1]
    assert (total["kb_searched"], total["kb_solved"], total["kb_deflection_pct"]) == (2, 1, 50.0)
    assert report["kb_articles"][0]["slug"] == "vpn-password"
    assert desk.d.stop() == 0
