"""Issue 18: several daemons, one desk. Three `maildesk serve` processes (nodes) with
separate data directories on one PostgreSQL database, driven by real SMTP clients
(tests/nodes.py): a load of 3,000 mails with agents' commands to one ticket on two nodes
at once; kill -9 of a node again and again under load; reply tokens made by one node and
answered through another, and a key rotation that reaches every node.

Each test collects every broken promise before it fails (`Verdict`), so one run shows
all that is wrong, with numbers.
"""
from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from nodes import (
    AGENTS,
    DESK,
    Client,
    Cluster,
    Letter,
    Sent,
    _env,
    letter,
    p99,
    pg_available,
    send_all,
    send_at,
    wait_for,
)

from maildesk.tickets.refs import token_address

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not pg_available(), reason="PostgreSQL not reachable (MAILDESK_TEST_PG)")]

ALICE, BOB = AGENTS[0]["address"], AGENTS[1]["address"]
PRIORITIES = ("P1", "P2", "P4", "P5")         # never the default P3: a change must show
DELAYS = (0.0, 0.0, 0.01, 0.03, 0.1, 0.4)      # bob's command after alice's, seconds


class Verdict:
    """Every broken promise of a test, said together at the end."""

    def __init__(self) -> None:
        self.broken: list[str] = []
        self.notes: list[str] = []

    def check(self, ok: object, what: str) -> None:
        if not ok:
            self.broken.append(what)

    def note(self, what: str) -> None:
        self.notes.append(what)
        print(what)

    def done(self) -> None:
        assert not self.broken, "\n".join(
            [f"{len(self.broken)} broken:", *(f"- {b}" for b in self.broken),
             "notes:", *(f"  {n}" for n in self.notes)])


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(n: int = 3, **overrides: Any) -> Cluster:
        c = Cluster(tmp_path / f"desk{len(made)}", n, **overrides).__enter__()
        made.append(c)
        return c
    yield make
    for c in made:
        c.__exit__(None, None, None)


def mid(value: str) -> str:
    return value.strip().strip("<>").lower()


def reasons(c: Cluster) -> str:
    """The quarantine's reasons, grouped (blob names and ids left out)."""
    counts = Counter(re.sub(r"\b[0-9a-f]{12,}\b|\d+", "#", (r[0] or ""))[:90]
                     for r in c.rows("SELECT reason FROM inbound WHERE state = 'quarantined'"))
    return "; ".join(f"{n} x {why!r}" for why, n in counts.most_common(4))


def stored(c: Cluster) -> dict[str, list[int]]:
    """Message-ID -> the ticket numbers of the messages rows (incoming) that hold it."""
    out: dict[str, list[int]] = defaultdict(list)
    for message_id, number in c.rows(
            "SELECT m.message_id, t.number FROM messages m JOIN tickets t ON t.id = m.ticket_id"
            " WHERE m.direction = 'in'"):
        out[mid(message_id)].append(number)
    return out


def check_accepted_stored_once(c: Cluster, sent: Sequence[Sent], v: Verdict) -> None:
    """Every mail that got 250 is one messages row: none lost, none stored twice."""
    rows = stored(c)
    accepted = [s for s in sent if s.accepted]
    lost = [s for s in accepted if not rows.get(mid(s.letter.message_id))]
    twice = [s for s in accepted if len(rows.get(mid(s.letter.message_id), [])) > 1]
    states = dict(c.rows("SELECT state, count(*) FROM inbound GROUP BY state"))
    v.note(f"inbound states: {states}")
    by_kind = Counter(s.letter.kind for s in lost)
    v.check(not lost, f"{len(lost)} of {len(accepted)} mails that got 250 are not on any "
                      f"ticket ({dict(by_kind)}); quarantined: {reasons(c) or 'none'}")
    examples = [(s.letter.message_id, rows[mid(s.letter.message_id)]) for s in twice[:3]]
    v.check(not twice, f"{len(twice)} mails that got 250 are stored more than once, e.g. "
                       f"{examples}")


def check_tickets(c: Cluster, new: Sequence[Sent], v: Verdict) -> None:
    """Gap-free numbers, one ticket per new mail, none twice."""
    numbers = [r[0] for r in c.rows("SELECT number FROM tickets ORDER BY number")]
    v.check(numbers == list(range(1, len(numbers) + 1)),
            f"ticket numbers are not 1..{len(numbers)}: "
            f"{len(set(range(1, max(numbers, default=0) + 1)) - set(numbers))} gaps, "
            f"{len(numbers) - len(set(numbers))} repeated, max {max(numbers, default=0)}")
    twice = c.rows("SELECT requester, subject, count(*) FROM tickets GROUP BY 1, 2 "
                   "HAVING count(*) > 1")
    v.check(not twice, f"{len(twice)} requester+subject pairs have more than one ticket, "
                       f"e.g. {twice[:3]}")
    split = c.rows("SELECT message_id, count(DISTINCT ticket_id) FROM messages WHERE "
                   "direction = 'in' GROUP BY 1 HAVING count(DISTINCT ticket_id) > 1")
    v.check(not split, f"{len(split)} Message-IDs are on more than one ticket, e.g. {split[:3]}")
    made = len(numbers)
    accepted_new = sum(1 for s in new if s.accepted)
    v.check(made == accepted_new, f"{accepted_new} new requests got 250, and there are {made} "
                                  "tickets")


def check_quarantine(c: Cluster, v: Verdict) -> None:
    n = c.scalar("SELECT count(*) FROM inbound WHERE state = 'quarantined'")
    v.check(n == 0, f"{n} mails quarantined: {reasons(c)}")


def check_acknowledgements(c: Cluster, v: Verdict) -> None:
    """One acknowledgement per ticket at most, and no outgoing mail delivered twice (by
    two nodes into their outboxes)."""
    twice = c.rows("SELECT ticket_id, count(*) FROM outbox WHERE template = 'acknowledgement' "
                   "GROUP BY 1 HAVING count(*) > 1")
    v.check(not twice, f"{len(twice)} tickets have more than one acknowledgement")
    files = Counter(d.outbox_id for d in c.delivered() if d.outbox_id is not None)
    again = [i for i, n in files.items() if n > 1]
    v.check(not again, f"{len(again)} outgoing mails were delivered more than once "
                       f"(outbox ids {again[:5]})")
    status = dict(c.rows("SELECT status, count(*) FROM outbox GROUP BY status"))
    v.note(f"outbox: {status}")


def note_log_errors(c: Cluster, v: Verdict) -> None:
    """Tracebacks in the nodes' logs are news: counted as notes."""
    for node in c.nodes:
        errors = node.log_lines(["Traceback", " ERROR "])
        if errors:
            v.note(f"{node.name} logged {len(errors)} ERROR/Traceback lines, first: "
                   f"{errors[0][:200]}")


# -- (a) a day's mail through three nodes -----------------------------------------------------

CUSTOMERS = [(f"Customer {k}", f"c{k}@org{k % 40}.test") for k in range(350)]
NEW, REPLIES, COMMANDED = 2100, 840, 30      # + 2 x 30 commands = 3,000


def new_requests(start: int, count: int) -> list[Letter]:
    out = []
    for i in range(start, start + count):
        name, addr = CUSTOMERS[(i * 7919) % len(CUSTOMERS)]
        out.append(letter(addr, f"Request {i}: the printer on floor {i % 9} is jammed",
                          f"Hello,\n\nrequest number {i}: it blinks red, page {i % 40}.\n"
                          f"{'More detail. ' * (i % 30)}\n\n{name}\n", kind="new", name=name,
                          number=i, title=f"Request {i}: the printer on floor {i % 9} is "
                                            "jammed"))
    return out


@pytest.mark.timeout(600)   # correctness under load, not speed (bench/nodes.py)
def test_three_nodes_take_3000_mails_with_commands_on_two_nodes_at_once(
        cluster: Callable[..., Cluster]) -> None:
    v, timings = Verdict(), {}
    c = cluster(3).start()
    begin = time.monotonic()

    # 1. new requests from many customers
    first = send_all(c.nodes, new_requests(0, NEW), clients=12)
    timings["send 1"] = time.monotonic() - begin
    c.wait_drained(400)
    timings["drained 1"] = time.monotonic() - begin
    c.wait_outbox(60)
    timings["outbox 1"] = time.monotonic() - begin

    rows = stored(c)
    ticket_of = {s.letter.message_id: rows[mid(s.letter.message_id)][0] for s in first
                 if s.accepted and len(rows.get(mid(s.letter.message_id), [])) == 1}
    acks = {n: m for n, m in c.rows(
        "SELECT t.number, o.message_id FROM outbox o JOIN tickets t ON t.id = o.ticket_id "
        "WHERE o.template = 'acknowledgement'")}
    made = [s.letter for s in first if s.letter.message_id in ticket_of]
    assert len(made) >= 3 * COMMANDED, \
        f"only {len(made)} of {NEW} new requests became a ticket: nothing to work on"

    # 2. the agents' reply addresses, from their notifications where they arrived
    rnd = random.Random(18)
    commanded = rnd.sample(made, COMMANDED)
    notes = c.notifications()
    source: Counter[str] = Counter()

    def address(ref: str, agent: str) -> str:
        found = notes.get((ref, agent))
        if found:
            source["notification"] += 1
            return found
        computed = c.computed_address(ref, agent)
        assert computed is not None, "no notification and no key to make a reply address"
        source[computed[1]] += 1
        return computed[0]

    pairs: list[list[Letter]] = []
    expect: dict[int, tuple[str, str]] = {}
    for k, m in enumerate(commanded):
        n = ticket_of[m.message_id]
        ref, subject = f"MD-{n}", f"Re: [MD-{n}] {m.meta['title']}"
        priority, category = PRIORITIES[k % len(PRIORITIES)], f"hardware-{k}"
        expect[n] = (priority, category)
        pairs.append([
            letter(ALICE, subject, f"#priority {priority}\n", kind="command",
                   to=address(ref, ALICE), first=0, ticket=n),
            letter(BOB, subject, f"#category {category}\n", kind="command",
                   to=address(ref, BOB), first=1, ticket=n)])
    v.note(f"agents' reply addresses from: {dict(source)}")

    # 3. customers' replies, and the agents' commands at the same time (no new tickets
    # now: a batch that opens one waits for the ticket counter's lock, and the nodes would
    # take their batches one after another); a quarter of the replies to the tickets the
    # agents work on
    replies = []
    for k in range(REPLIES):
        m = commanded[k % COMMANDED] if k % 4 == 0 else made[rnd.randrange(len(made))]
        n = ticket_of[m.message_id]
        name, addr = next((nm, a) for nm, a in CUSTOMERS if a == m.sender)
        original = m.meta["title"]
        if k % 2 and n in acks:         # answers our acknowledgement
            replies.append(letter(addr, f"Re: {original}", f"Still blinking ({k}).\n",
                                  kind="reply", name=name, in_reply_to=acks[n],
                                  references=[m.message_id, acks[n]], ticket=n))
        else:                           # a new mail that names the ticket in its subject
            replies.append(letter(addr, f"Re: [MD-{n}] {original}", f"Any news? ({k})\n",
                                  kind="reply", name=name, ticket=n))
    load = replies
    rnd.shuffle(load)
    # alice's command k at 0.5 + 0.2 k s, bob's to the same ticket on another node at the
    # same moment or a little later, while the replies come in for 7 s
    schedule = [(0.5 + 0.2 * k + m * DELAYS[k % len(DELAYS)], pair[m])
                for k, pair in enumerate(pairs) for m in (0, 1)]
    together: list[Sent] = []
    agents = threading.Thread(target=lambda: together.extend(send_at(c.nodes, schedule)))
    agents.start()
    second = send_all(c.nodes, load, clients=12, rate=REPLIES / 7)
    agents.join()
    timings["send 2"] = time.monotonic() - begin
    c.wait_drained(400)
    timings["drained 2"] = time.monotonic() - begin
    c.wait_outbox(60)
    timings["outbox 2"] = time.monotonic() - begin

    sent = first + second + together
    assert len(sent) == 3000
    refused = [s for s in sent if not s.accepted]
    v.check(not refused, f"{len(refused)} mails never got 250: "
                         f"{[s.tries[-3:] for s in refused[:3]]}")
    v.note(f"{sum(1 for s in sent if len(s.tries))} mails needed another try; "
           f"p99 250 latency {p99([s.latency for s in sent if s.latency]) or 0:.3f} s")
    check_accepted_stored_once(c, sent, v)
    check_quarantine(c, v)
    check_tickets(c, [s for s in sent if s.letter.kind == "new"], v)
    check_acknowledgements(c, v)

    rows = stored(c)
    astray = [s for s in second if s.letter.kind == "reply" and s.accepted
              and rows.get(mid(s.letter.message_id))
              and rows[mid(s.letter.message_id)] != [s.letter.meta["ticket"]]]
    v.check(not astray, f"{len(astray)} customer replies are not on the ticket they answer")

    fields = {n: (p, cat) for n, p, cat in c.rows(
        "SELECT number, priority, category FROM tickets WHERE number = ANY(:n)",
        n=list(expect))}
    no_priority = [n for n, (p, _cat) in expect.items() if fields.get(n, (None,))[0] != p]
    no_category = [n for n, (_p, cat) in expect.items() if fields.get(n, (None, None))[1] != cat]
    both_lost = set(no_priority) & set(no_category)
    refused_tokens = dict(c.rows("SELECT kind, count(*) FROM events WHERE kind IN "
                                 "('token.refused', 'sender.unverified', 'commands.ignored') "
                                 "GROUP BY kind"))
    v.check(not no_priority and not no_category,
            f"agents' commands to one ticket on two nodes at once: of {len(expect)} tickets "
            f"{len(no_priority)} lack their #priority and {len(no_category)} their #category "
            f"({len(both_lost)} both); events: {refused_tokens}")
    v.note(f"timings (s since start): { {k: round(t, 1) for k, t in timings.items()} }")
    note_log_errors(c, v)
    v.done()


# -- (b) kill -9 under load --------------------------------------------------------------------

KILLS, KILL_MAILS = 10, 1000


@pytest.mark.timeout(600)   # correctness under load, not speed (bench/nodes.py)
def test_kill_9_of_a_node_under_load_loses_and_doubles_nothing(
        cluster: Callable[..., Cluster]) -> None:
    v = Verdict()
    c = cluster(3).start()
    rnd = random.Random(9)
    mails = new_requests(0, KILL_MAILS)
    sending = threading.Event()
    sending.set()
    killed: list[str] = []
    failed_starts: list[str] = []

    def killer() -> None:
        while sending.is_set() or len(killed) < KILLS:
            time.sleep(rnd.uniform(0.2, 1.0))
            node = rnd.choice(c.nodes)
            node.kill()
            killed.append(node.name)
            for _ in range(3):          # a start that fails (the port not free yet): again
                try:
                    node.start()
                    break
                except AssertionError as e:
                    failed_starts.append(f"{node.name}: {str(e)[-300:]}")

    k = threading.Thread(target=killer)
    begin = time.monotonic()
    k.start()
    try:
        sent = send_all(c.nodes, mails, clients=12, rate=45)
    finally:
        sending.clear()
        k.join()
    took = time.monotonic() - begin
    c.start()
    c.wait_drained(400)
    v.note(f"{len(killed)} kills ({dict(Counter(killed))}) over {took:.0f} s; "
           f"{sum(1 for s in sent if s.tries)} mails needed another try")
    v.check(len(killed) >= KILLS, f"only {len(killed)} kills")
    v.check(not failed_starts, f"a killed node did not start again: {failed_starts[:2]}")
    refused = [s for s in sent if not s.accepted]
    v.check(not refused, f"{len(refused)} mails never got 250: "
                         f"{[s.tries[-3:] for s in refused[:3]]}")
    check_accepted_stored_once(c, sent, v)
    check_tickets(c, sent, v)
    note_log_errors(c, v)
    v.done()


# -- (c) reply tokens across nodes, and a key rotation ---------------------------------------

def command(agent: str, address: str, ref: str, body: str, first: int) -> Letter:
    return letter(agent, f"Re: [{ref}] Printer", body, kind="command", to=address, first=first)


def one_ticket(c: Cluster, sender: str = "ana@customer.test") -> tuple[str, dict[str, str]]:
    """A new ticket by mail to node 1; its ref and the agents' reply addresses, read from
    the notifications the desk delivered to them."""
    s = send_all(c.nodes, [letter(sender, "Printer on floor 2 is jammed", "It blinks red.\n",
                                  kind="new", first=0)], clients=1)[0]
    assert s.accepted, s.tries
    c.wait_drained(30)
    ref = wait_for(lambda: c.scalar("SELECT t.ref FROM messages m JOIN tickets t ON "
                                    "t.id = m.ticket_id WHERE m.message_id = :m",
                                    m=s.letter.message_id), 30, "the ticket")
    found = wait_for(lambda: {a: r for (t, a), r in c.notifications().items() if t == ref}
                     if all((ref, a) in c.notifications() for a in (ALICE, BOB)) else None,
                     30, f"the agents' notifications of {ref}")
    return str(ref), found


def applied(c: Cluster, ref: str) -> dict[str, Any]:
    (priority, category, assignee, tags), = c.rows(
        "SELECT priority, category, assignee, tags FROM tickets WHERE ref = :r", r=ref)
    return {"priority": priority, "category": category, "assignee": assignee,
            "tags": list(tags or [])}


def test_a_token_made_by_one_node_works_on_the_others(
        cluster: Callable[..., Cluster]) -> None:
    """Node 1 alone makes the ticket and the agents' reply addresses; with node 1 stopped,
    the agents answer through node 2 and node 3."""
    v = Verdict()
    c = cluster(3)
    c.start([c.nodes[0]])
    ref, addresses = one_ticket(c)
    c.nodes[0].stop()
    c.start(c.nodes[1:])
    sent = send_all(c.nodes, [
        command(ALICE, addresses[ALICE], ref, "#priority P1\n#category network\n", first=1),
        command(BOB, addresses[BOB], ref, "#assign me\n", first=2)], clients=1)
    v.check(all(s.accepted for s in sent), [s.tries for s in sent])
    v.note(f"accepted by {[s.node for s in sent]}")
    c.wait_drained(30)
    got = applied(c, ref)
    proofs = [r[0] for r in c.rows("SELECT m.proof FROM messages m WHERE m.from_addr IN "
                                   "(:a, :b)", a=ALICE, b=BOB)]
    refused = [f"{kind}: {str(data)[:160]}" for kind, data in c.rows(
        "SELECT e.kind, e.data FROM events e WHERE e.kind IN ('token.refused', "
        "'sender.unverified', 'commands.ignored') ORDER BY e.id")]
    v.check(got["priority"] == "P1" and got["category"] == "network",
            f"alice's commands through node 2 did not apply: {got}")
    v.check(got["assignee"] == "bob", f"bob's #assign through node 3 did not apply: {got}")
    v.check(proofs == ["token", "token"], f"the agents' mails are proven by {proofs}, "
                                          f"not by their tokens; {refused}")
    v.check(len(c.keys()) >= 1, "no key in desk_keys: every node keeps its own "
                                f"({sorted(c.node_keys())} have a secret.key)")
    v.done()


def rotate(c: Cluster) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "maildesk", "--config",
                           str(c.nodes[0].config), "keys", "rotate"], capture_output=True,
                          env=_env(), timeout=60)


def through(c: Cluster, i: int, mail: Letter, timeout: float = 10) -> Sent:
    """mail sent to node i and processed by node i alone: the others are stopped (SIGSTOP)
    until it is taken."""
    others = [n for n in c.nodes if n is not c.nodes[i] and n.alive]
    for n in others:
        n.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
    try:
        client = Client(c.nodes[i:i + 1])
        try:
            s = client.deliver(mail, 0, time.monotonic() + timeout)
        finally:
            client.close()
        if s.accepted:
            c.wait_drained(timeout)
        return s
    finally:
        for n in others:
            n.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]


def test_after_keys_rotate_a_new_token_reaches_every_node_and_an_old_one_still_works(
        cluster: Callable[..., Cluster]) -> None:
    """`maildesk keys rotate` on node 1: within ~15 s the desk's notifications carry reply
    addresses of the new key, and every node takes them; an address of the old key still
    works on every node."""
    v = Verdict()
    c = cluster(3).start()
    ref, addresses = one_ticket(c)
    old = addresses[ALICE]
    r = rotate(c)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    rotated = time.monotonic()
    keys = c.keys()
    v.check(len(keys) >= 2, f"desk_keys holds {len(keys)} key(s) after a rotation")

    # the customer writes again, through each node in turn, until a notification to alice
    # carries a reply address that is not the old one: made with the new key
    new, k = None, 0
    while new is None and time.monotonic() - rotated < 15:
        k += 1
        s = send_all(c.nodes, [letter("ana@customer.test", f"Re: [{ref}] Printer on floor 2",
                                      f"Still jammed ({k}).\n", kind="reply", first=k)],
                     clients=1)[0]
        if s.accepted:
            c.wait_drained(10)
            c.wait_outbox(5)
        fresh = c.reply_addresses(ref, ALICE) - {old}
        new = next(iter(fresh), None)
        if new is None:
            time.sleep(0.5)
    v.check(new is not None, "no notification carried a reply address of the new key "
                             f"{time.monotonic() - rotated:.0f} s after the rotation")
    if keys:
        computed = token_address(keys[0], DESK, ref, ALICE)
        if new is None:
            new = computed
        v.check(new == computed, f"the new notification's reply address {new} is not the "
                                 f"newest key's {computed}")
    assert new is not None

    late: dict[str, float] = {}
    for i, node in enumerate(c.nodes):      # each node takes the new token within ~15 s
        k = 0
        while True:
            k += 1
            tag = f"new{i}x{k}"
            s = through(c, i, command(ALICE, new, ref, f"#tag +{tag}\n", first=0))
            if s.accepted and tag in applied(c, ref)["tags"]:
                late[node.name] = round(time.monotonic() - rotated, 1)
                break
            if time.monotonic() - rotated > 15:
                break
            time.sleep(0.5)
        v.check(node.name in late, f"{node.name} still refuses the new key's token "
                                   f"{time.monotonic() - rotated:.0f} s after the rotation")
    v.note(f"the new token worked after: {late}")
    for i, node in enumerate(c.nodes):      # and the token made before the rotation
        tag = f"old{i}"
        s = through(c, i, command(ALICE, old, ref, f"#tag +{tag}\n", first=0))
        v.check(s.accepted and tag in applied(c, ref)["tags"],
                f"{node.name} refuses the token made before the rotation")
    v.done()
