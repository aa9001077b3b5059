"""Recurring incidents to find: K planted outages, each reported within a few hours by
several people in their own words, among unrelated tickets spread over a month.

The unrelated tickets are the knowledge base's evaluation mails (bench/kb_eval.py):
some 60 everyday topics, many asked again and again (a password forgotten, a printer
offline), which is what a finder of outages must NOT take for one. An outage is one of
OUTAGES, with a detail of its own (which system, which floor, which office) that all of
its reports share, as the reports of one real outage do; the same kind of outage may
happen twice in a month, as two outages. Phrasings were written from the scenario, not
from each other, with the variety of different people: some name the system, some only
what they see.

    tickets(seed, outages=20, background=5000, days=30) -> [Ticket(...)]
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

from kb_eval import CLOSINGS, FILLERS, GREETINGS, NAMES, mails

# kind: (details, subjects, statements); {d} is the outage's detail
OUTAGES: dict[str, tuple[list[str], list[str], list[str]]] = {
    "app-down": (
        ["SAP", "Jira", "Salesforce", "the CRM", "the HR portal", "Confluence"],
        ["{d} is down", "{d} not loading", "Can't reach {d}", "{d} unavailable?",
         "Problem with {d}", "urgent: {d}"],
        ["{d} won't load at all, I just get a timeout in the browser.",
         "Is {d} down? Nobody in my team can open it since about ten minutes.",
         "I get 'service unavailable' when I try to log in to {d}.",
         "{d} has been spinning forever this morning and then shows a gateway error.",
         "We can't work, {d} does not respond.",
         "Trying to open {d} gives me a blank page and then an error 503.",
         "Since 9 o'clock {d} is unreachable for me and my colleagues."]),
    "mail-delivery": (
        ["outgoing", "external", "incoming"],
        ["Emails not arriving", "Mail stuck in outbox", "Customers don't get my mails",
         "email delivery problem", "No new mail since this morning"],
        ["My {d} mails are not being delivered, they stay in the outbox.",
         "Customers tell me they haven't received anything I sent today.",
         "I haven't received a single {d} email since about 8 am, is something wrong "
         "with the mail server?",
         "Messages I send bounce back with 'temporary failure, will retry'.",
         "Email seems broken, nothing I send reaches anyone outside.",
         "The mail server must have a problem, my messages are queued for hours."]),
    "wifi-building": (
        ["building A", "building B", "the Hamburg office", "the third floor",
         "the warehouse"],
        ["No Wi-Fi in {d}", "wireless down", "WLAN not working in {d}", "Internet gone",
         "Can't connect to the network"],
        ["The wireless network in {d} is completely gone, my laptop sees no network.",
         "Nobody in {d} can get online, the Wi-Fi just disappeared.",
         "Our whole area in {d} lost internet over WLAN twenty minutes ago.",
         "The corporate Wi-Fi is not showing up any more here in {d}.",
         "I'm in {d} and can't connect to any wireless network, colleagues neither."]),
    "shared-drive": (
        ["S:", "the finance share", "the projects drive", "the team drive"],
        ["Network drive missing", "{d} not accessible", "Can't open files on {d}",
         "shared folder gone"],
        ["The drive {d} disappeared from my explorer this morning.",
         "When I open {d} I get 'network path not found'.",
         "All files on {d} are gone or at least I can't reach them.",
         "I can't save to {d}, it says the location is not available.",
         "Our shared folder on {d} won't open, it hangs and then errors."]),
    "vpn-gateway": (
        ["Frankfurt", "Singapore", "the US", "London"],
        ["VPN down in {d}?", "Nobody can connect to VPN", "VPN gateway not responding",
         "remote access broken for everyone"],
        ["None of us working from {d} can connect to the VPN since lunch.",
         "The VPN gateway for {d} doesn't answer, the client times out.",
         "All remote staff in {d} lost the VPN connection at the same time.",
         "I'm in {d} and the VPN refuses every connection, my colleagues too.",
         "Remote access via {d} seems to be down for the whole team."]),
    "printing-all": (
        ["floor 2", "floor 4", "the main office", "the print server"],
        ["All printers offline", "Printing broken on {d}", "Nobody can print",
         "print queue stuck"],
        ["None of the printers on {d} work, every job stays in the queue.",
         "Nobody on {d} can print anything right now.",
         "The print server seems down, all printers show as offline for us on {d}.",
         "Jobs sent to any printer on {d} just vanish.",
         "Printing stopped for the whole of {d} about an hour ago."]),
    "phones": (
        ["the Berlin office", "the call centre", "the sales floor"],
        ["Phones dead", "No dial tone in {d}", "telephones not working",
         "Can't make calls"],
        ["The desk phones in {d} have no dial tone since 10 am.",
         "We can't make or receive calls in {d}, the phones are dead.",
         "All telephones in {d} went silent, customers can't reach us.",
         "Incoming calls to {d} fail with a busy signal.",
         "Our phones in {d} show 'no service'."]),
    "login-sso": (
        ["single sign-on", "the login page", "Microsoft login"],
        ["Can't log in anywhere", "SSO broken", "Login loop", "sign in fails"],
        ["Every application sends me to {d} and then fails with an error.",
         "I can't sign in to anything, {d} keeps looping back.",
         "{d} gives 'invalid request' for me and my whole team.",
         "Since this morning {d} rejects everyone, we are locked out of all tools.",
         "Login through {d} is broken, I get an error right after entering my "
         "password."]),
    "payroll-portal": (
        ["payslips", "the expense tool", "time sheets"],
        ["{d} not working", "Error in {d}", "Can't submit {d}", "{d} broken"],
        ["When I try to open {d} I get an internal error.",
         "{d} refuses to save, it shows 'something went wrong'.",
         "I can't access {d} at all today, the page crashes.",
         "Submitting {d} fails every time with an error message.",
         "{d} is broken for me and the people next to me."]),
    "website": (
        ["checkout", "the shop", "the customer login"],
        ["Website down", "{d} broken", "Customers complain about {d}",
         "Error on our website"],
        ["Customers are calling because {d} on our website throws an error.",
         "{d} on the public website gives a 500 error.",
         "Our website's {d} doesn't work, orders can't be placed.",
         "I tried {d} on our site myself and it fails.",
         "Several customers wrote that {d} hangs and never finishes."]),
}


@dataclass(frozen=True)
class Ticket:
    at: float            # seconds since the month began
    subject: str
    text: str
    outage: int | None   # which planted outage it reports; None: unrelated


def first_sentence(text: str) -> str:
    """The statement a background mail was made of: its first sentence after the
    greeting, its numbers left out (the pools' {n} and {inv} differ per mail)."""
    body = text.split("\n\n", 1)[-1] if text.split("\n\n", 1)[0].endswith(",") else text
    return re.sub(r"\d+", "", re.split(r"[.?!]", body, maxsplit=1)[0]).strip().lower()


def _report(rng: random.Random, detail: str, subjects: list[str],
            statements: list[str]) -> tuple[str, str]:
    said = rng.sample(statements, rng.choice([1, 1, 2]))
    fillers = rng.sample(FILLERS["en"], rng.choice([0, 0, 1, 1, 2]))
    body = " ".join(s.format(d=detail) for s in [*said, *fillers])
    greeting = rng.choice(GREETINGS["en"])
    text = "\n\n".join(p for p in (greeting, body) if p)
    subject = rng.choice(subjects).format(d=detail)
    subject = subject[0].upper() + subject[1:]
    return subject, f"{text}\n\n{rng.choice(CLOSINGS['en'])}\n{rng.choice(NAMES)}\n"


def tickets(seed: int = 20, outages: int = 20, background: int = 5000,
            days: int = 30, varied: bool = False) -> list[Ticket]:
    """The tickets of a month, by arrival: background unrelated ones spread evenly, and
    `outages` outages, each reported by 3 to 15 people within 1 to 4 hours.

    varied: no two background tickets within 12 hours of each other say the same first
    sentence. The background's phrasings come from pools of three or four per topic,
    so without this several people write the same sentence word for word in one
    afternoon, which real people seldom do; both are measured."""
    rng = random.Random(seed)
    month = days * 86400.0
    out: list[Ticket] = []
    pool = [m for s in range(background // 100 + 1) for m in mails(seed=100 + s)]
    rng.shuffle(pool)
    said: dict[str, list[float]] = {}
    for m in pool:
        if len(out) == background:
            break
        at = rng.uniform(0, month)
        first = first_sentence(m.text)
        if varied and any(abs(at - t) < 12 * 3600 for t in said.get(first, ())):
            continue
        said.setdefault(first, []).append(at)
        out.append(Ticket(at, m.subject, m.text, None))
    kinds = sorted(OUTAGES)
    for k in range(outages):
        details, subjects, statements = OUTAGES[kinds[k % len(kinds)]]
        detail = rng.choice(details)
        start, length = rng.uniform(0, month - 4 * 3600), rng.uniform(3600, 4 * 3600)
        for _ in range(rng.randint(3, 15)):
            subject, text = _report(rng, detail, subjects, statements)
            out.append(Ticket(start + rng.uniform(0, length), subject, text, k))
    out.sort(key=lambda t: t.at)
    return out
