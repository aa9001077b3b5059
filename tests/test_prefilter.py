"""The rules' prefilter against testing every rule: the same decisions, on the world's mail.

A gate (maildesk/rules/prefilter.py) must be a necessary condition of its rule: a rule
it leaves out must be one that would not have matched. These tests generate a rule set
of every gate kind (words, regexes, domains, exact values, `any`, `not`, `stop`) from
the corpus's own words, and check on every corpus mail, and on a few mails written to
hold the letters case-insensitive regexes fold differently, that the index (a) never
leaves out a rule that matches, (b) decides a lone `contains` of three letters or more
exactly as the test does, and (c) gives the same decision as testing every rule in
file order.
"""
from __future__ import annotations

import json
import random
import re
import string
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import mail

from maildesk.config.schema import Desk
from maildesk.intake.sources import read
from maildesk.mail.parse import ParsedMail, parse
from maildesk.rules import conditions
from maildesk.rules.load import load
from maildesk.rules.prefilter import UNFOLDED, gate, joinable, required_words
from maildesk.rules.vocabulary import facts_for
from maildesk.store.blobs import digest_of
from maildesk.store.rows import TicketRow

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
DESK = Desk.model_validate({"queues": [{"name": "general"}, {"name": "it"}]})
NOW = datetime(2026, 11, 2, 10, 0, tzinfo=timezone.utc)
# Mails written for the letters a case-insensitive regex matches to i and s while
# str.lower() keeps them apart (İ, ı, ſ), and for Kelvin's K, which lower() does fold.
FOLDING = [mail(subject="İSTANBUL ofisi: yazıcı ıs down", body="Paſsword reſet for ıt\n"),
           mail(subject="Printer \u212aaput", body="Dıe VPN ist weg, bitte İnfo\n",
                sender="Ana <ana@sub.customer.test>", X_Mailer="Thunderbırd 128")]


def ticket(queue: str) -> TicketRow:
    return TicketRow(number=1, ref="MD-1", subject="s", requester="ana@customer.test",
                     requester_name=None, cc=[], status="open", type="incident",
                     priority="P3", impact="medium", urgency="medium", tags=["vip"],
                     problem=None, category=None, queue=queue, assignee=None, linked_to=None,
                     created_at=NOW, updated_at=NOW)


def corpus() -> list[ParsedMail]:
    raws = [raw for p in sorted(CORPUS.rglob("*")) if p.is_file()
            and p.name not in ("INDEX.tsv", "SOURCES.md") for _o, raw in read(p)]
    return [parse(raw, digest_of(raw)) for raw in raws + FOLDING]


def words_of(mails: list[ParsedMail], rng: random.Random) -> list[str]:
    """Words the mails hold (so that rules match), cut and re-cased, and a few they do not."""
    found = sorted({w for m in mails for w in re.findall(r"\w{3,12}", f"{m.subject} "
                    f"{m.text[:400]} {m.from_addr}")})
    picked = rng.sample(found, 150)
    return [w if i % 3 else w.upper() for i, w in enumerate(picked)] + \
        ["İstanbul", "ıs", "paſs", "KAPUT", "zz-none-zz", "wi-fi", "ß"]


REGEXES = [r"\b{w}\b", r"{w}\s+\w+", r"(?-i:{w})", r"{w}|{v}", r"^(re|fwd?):\s*{w}",
           r"({w}|{v})+", r"x?{w}", r"(?>{w})", r"{w}(?=\s)", r"[A-Za-z]{w}", r"\d{{3,}}",
           r"(?x) {w} \s* {v}", r"{w}.*{v}", r"(?:{w}){{2}}", r"(?i:{w})", r"{w}?s",
           r"\b[a-z]{{2}}\d{{2}}", r"^\W*$", r"(\w)\1", r"(?x) \d{{2}} - \d", r"(?P<x>\d)\d",
           r"(?-i:[A-Z]{{3}})", r"\s$"]
FIELDS = ["subject", "body", "from", "to", "cc", "header.x-mailer", "header.content-type",
          "header.list-id", "sender_domain", "requester"]


def condition(rng: random.Random, words: list[str], mails: list[ParsedMail]) -> Any:
    w, v = rng.choice(words), rng.choice(words)
    fld = rng.choice(FIELDS)
    kind = rng.random()
    if kind < 0.35:
        return {fld: {"contains": w}}
    if kind < 0.6:
        return {fld: {"matches": rng.choice(REGEXES).format(w=re.escape(w), v=re.escape(v))}}
    if kind < 0.7:
        m = rng.choice(mails)
        return {"from": {"domain": [m.from_addr.rpartition("@")[2].partition(".")[2] or "x",
                                    "customer.test"]}}
    if kind < 0.8:
        m = rng.choice(mails)
        return {rng.choice(["from", "sender_domain", "subject"]):
                [m.from_addr, m.from_addr.rpartition("@")[2], m.subject[:40]]}
    if kind < 0.87:
        return {"any": [{fld: {"contains": w}}, {"body": {"matches": re.escape(v)}}]}
    if kind < 0.93:
        return {"not": {fld: {"contains": w}}}
    return {"body": {"contains": w}, "queue": rng.choice(["general", "it"])}


def rules_file(tmp_path: Path, mails: list[ParsedMail]) -> Path:
    rng = random.Random(22)
    words = words_of(mails, rng)
    rules = [{"name": f"r{i}", "on": ["ticket.created", "customer.replied"],
              "if": condition(rng, words, mails), "stop": rng.random() < 0.05,
              "then": [{"tags": {"add": [f"t{i}"]}}]} for i in range(600)]
    path = tmp_path / "rules.yaml"
    path.write_text(json.dumps(rules))      # JSON is YAML: every word quoted as it must be
    return path


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"{CORPUS} not found")
def test_the_index_decides_as_testing_every_rule_on_the_corpus(tmp_path: Path) -> None:
    mails = corpus()
    rs = load([rules_file(tmp_path, mails)], DESK, {"ticket_notice"})
    gates = {r.name: gate(r.condition) for r in rs.rules}
    kinds = {k for g in gates.values() if g for k, _f, _v in g.keys}
    assert kinds == {"word", "regex", "pattern", "domain", "exact"}, kinds
    matched = narrowed = 0
    for i, m in enumerate(mails):
        facts = facts_for(DESK, ticket("general" if i % 2 else "it"), m, NOW,
                          recipients=m.to)
        found = {r.name for r in rs.candidates("ticket.created", facts)}
        for r in rs.rules:
            holds = r.condition.test(facts)
            matched += holds
            narrowed += r.name not in found
            assert not holds or r.name in found, (m.subject, r.name, r.condition)
            if isinstance(r.condition, conditions.Test) and r.condition.op == "contains" \
                    and not r.condition.membership and gates[r.name] is not None:
                assert (r.name in found) == holds, (m.subject, r.name, r.condition)
        fast = rs.evaluate("ticket.created", facts)
        every = rs.evaluate("ticket.created", facts, explain=True)
        assert (fast.hits, fast.stopped_by, fast.actions) == \
            (every.hits, every.stopped_by, every.actions), m.subject
    assert matched > 1000 and narrowed > 0.8 * len(mails) * len(rs.rules), (matched, narrowed)


def test_the_folding_mails_reach_the_regex_rules_of_their_fields(tmp_path: Path) -> None:
    """A regex matches ı and ſ as i and s: a text holding them reaches every regex rule."""
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps([
        {"name": "is", "on": "ticket.created", "if": {"subject": {"matches": r"\bis\b"}},
         "then": [{"tags": {"add": ["a"]}}]},
        {"name": "pass", "on": "ticket.created", "if": {"body": {"matches": "password"}},
         "then": [{"tags": {"add": ["b"]}}]},
        {"name": "kaput", "on": "ticket.created", "if": {"subject": {"matches": "kaput"}},
         "then": [{"tags": {"add": ["c"]}}]}]))
    rs = load([path], DESK, {"ticket_notice"})
    for raw, expect in [(FOLDING[0], ["is", "pass"]), (FOLDING[1], ["kaput"])]:
        m = parse(raw, digest_of(raw))
        facts = facts_for(DESK, ticket("it"), m, NOW)
        assert rs.evaluate("ticket.created", facts).hits == expect


def test_no_other_letter_folds_to_ascii_only_for_regexes() -> None:
    """Every character a case-insensitive regex matches to an ASCII one lowers to it, but
    those in UNFOLDED (İ lowers to i + U+0307, whose mark UNFOLDED holds)."""
    everything = "".join(chr(i) for i in range(0x110000) if not 0xD800 <= i < 0xE000)
    odd = {t for c in string.printable for t in re.findall(re.escape(c), everything, re.I)
           if t.lower() != c.lower()}
    assert {t.lower()[-1] for t in odd} == UNFOLDED


@pytest.mark.parametrize("pattern, words", [
    (r"\b(down|outage|unavailable)\b", {"down", "outage", "unavailable"}),
    (r"floor \d", {"floor "}),
    (r"VPN\s+(is\s+)?DOWN", {"down"}),
    (r"(?-i:Printer)", {"printer"}),
    (r"x?invoice", {"invoice"}),
    (r"(refund)+ now", {"refund"}),
    (r"(refund)* now", {" now"}),
    (r"\d{5,}", None),
    (r"pass|ok", None),                 # one branch has no word of three letters: no gate
    (r"caf\u00e9 menu", {" menu"}),    # é ends a run: non-ASCII letters fold apart
    (r"(?x) pass  word", {"password"}),
    (r"[Ss]erver", {"erver"}),
])
def test_required_words(pattern: str, words: set[str] | None) -> None:
    found = required_words(pattern, re.IGNORECASE)
    assert found == words or (words is None and not (found and min(map(len, found)) >= 3))


@pytest.mark.parametrize("pattern, joins", [
    (r"\d{5,}", True), (r"(?-i:[A-Z]{3})", True), (r"(a|b)c", True),
    (r"(a)\1", False),                  # group numbers shift in an alternation
    (r"(a)?(?(1)x|y)", False),
    (r"(?P<n>\d)", False),               # names could clash
    (r"(?x)\d +", False),                # a flag of the whole pattern must come first
])
def test_joinable(pattern: str, joins: bool) -> None:
    assert joinable(re.compile(pattern, re.IGNORECASE)) is joins
