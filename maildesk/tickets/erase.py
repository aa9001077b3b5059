"""`maildesk requester erase`: a person taken out of the desk (GDPR art. 17), their tickets
kept, countable, under a pseudonym (privacy.py).

What goes, in one transaction:

- their own mail: each message's text, quoted history, subject and name; its attachments
  (rows, and bytes unless others' mail has the same attachment and it does not name
  them); the raw mail;
- on the tickets they requested, the subject (their words, also in their outgoing mail's
  rows: agents' notifications repeat it) and every message's quoted history (it quotes
  them), and their survey comments;
- their address, anywhere in any text or JSON column of any table (To and Cc of others'
  mail, the tickets' requester and participants, events, the inbound queue, thread
  references, outgoing mail's recipients): replaced by the pseudonym; their display
  names, as whole words, by "[erased]"; and on the tickets that concern them, their
  address's local part as a word ("Hi dwsauder,"). A name or local part others use
  too (the desk's, an agent's, another sender's: privacy.shared()) is left alone;
- mail owed to them (the outbox, with its delivery attempts), held or still queued mail
  from them (its row stays, marked deleted, as the record that it was accepted), their
  survey opt-out;
- every stored blob that holds the address or a display name (theirs, and others' mail
  that names them): every stored blob is read, and each one found is removed with the
  rows pointing at nothing (store/shred.py); queued mail of ours whose blob went is
  marked failed;
- a triage model whose words include theirs, and words of theirs among the problem
  proposals'; the cached vectors of similar tickets (data_dir/similar.npz, rebuilt on
  use).

The transaction locks the tables the daemon writes tickets through (PostgreSQL; SQLite
has one writer at a time anyway), so a batch of mail being ticketed meanwhile is either
all before the erasure, and erased, or all after it: mail of theirs still queued is
marked deleted first, and is never ticketed. Only the wiping of the blobs' bytes and
SQLite's index compaction come after the commit.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Connection,
    String,
    delete,
    func,
    or_,
    select,
    update,
)

from ..store import search
from ..store.blobs import BlobError, BlobStore
from ..store.models import Base
from ..store.references import referenced
from ..store.shred import NO_BLOB, Dropped, drop
from ..store.tables import (
    T_ATTACH,
    T_AUDIT,
    T_EVENTS,
    T_INBOUND,
    T_MESSAGES,
    T_OPT_OUTS,
    T_OUTBOX,
    T_PROPOSALS,
    T_SURVEYS,
    T_TICKETS,
    T_TRIAGE,
)
from .privacy import ERASED, MIN_WORD, Concerned, Person, concerned, contains, record, whole
from .removal import delete_outbox, lock

# tables with no person's text: ids, digests, keys
UNTOUCHED = frozenset({T_AUDIT.name, "blob_data", "blob_index", "desk_keys", "counters"})
# inbound rows not yet settled into a ticket: a person's held or queued mail
UNSETTLED = ("queued", "released", "quarantined", "spam", "loop", "bounce", "auto-reply",
             "bulk", "complaint")


@dataclass
class Erasure:
    person: Person
    found: Concerned
    counts: dict[str, int] = field(default_factory=dict)
    rewritten: dict[str, int] = field(default_factory=dict)   # table -> rows rewritten
    dropped: Dropped | None = None
    delivered: list[int] = field(default_factory=list)   # outbox ids whose mail went

    def as_dict(self) -> dict[str, Any]:
        return {"pseudonym": self.person.token, "names": len(self.person.names),
                "tickets_requested": len(self.found.requested),
                "tickets_participated": len(self.found.participated),
                **self.counts, "rows_rewritten": dict(sorted(self.rewritten.items()))}


def _word(text: str) -> str:
    """A name or a local part as a word of text, not part of another word, address or
    domain (`dwsauder@zeegee.com`, `mail.dwsauder.com` are someone else's, or nobody's)."""
    return rf"(?<![@.]){whole(text)}(?![\w.+-]*@)"


def _replacer(pairs: list[tuple[str, str]], form: Callable[[str], str] = whole
              ) -> Callable[[Any], Any]:
    """A function rewriting a value (text, or JSON of lists, dicts and text, keys too):
    each of pairs' texts, in any case, becomes its replacement where form (a pattern of
    the text: whole, _word, re.escape) finds it. No pairs: the value as it is."""
    if not pairs:
        return lambda value: value
    found = re.compile("|".join(form(a) for a, _ in pairs), re.IGNORECASE)
    by = {a.lower(): b for a, b in pairs}

    def fix(value: Any) -> Any:
        if isinstance(value, str):
            return found.sub(lambda m: by[m.group(0).lower()], value)
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {fix(k): fix(v) for k, v in value.items()}
        return value
    return fix


def _text_columns(table: Any) -> list[Column[Any]]:
    return [c for c in table.c if isinstance(c.type, (String, JSON)) and not c.primary_key]


def _rewrite(conn: Connection, table: Any, where: ColumnElement[bool],
             columns: list[Column[Any]], fix: Callable[[Any], Any]) -> set[Any]:
    """Rows of table matching where, their columns passed through fix; the primary keys
    of those that changed."""
    if not columns:
        return set()
    key = list(table.primary_key.columns)[0]
    changed = set()
    for row in conn.execute(select(key, *columns).where(where)).all():
        fixed = [fix(v) for v in row[1:]]
        values = {c.name: new for c, new, old in zip(columns, fixed, row[1:]) if new != old}
        if values:
            conn.execute(update(table).where(key == row[0]).values(values))
            changed.add(row[0])
    return changed


def erase(conn: Connection, store: BlobStore, person: Person, now: datetime, holding: set[str],
          dry_run: bool = False) -> Erasure:
    """Erase person in conn's transaction (the module's docstring); holding: the digests
    of the blobs found to hold them (store/shred.py holding(), read before the
    transaction, so that the lock is short). Returns what was done; the caller wipes
    `dropped` after the commit (dry_run: the caller rolls back and records nothing)."""
    lock(conn)
    out = Erasure(person, concerned(conn, person))
    a, m, t = person.address, T_MESSAGES.c, T_TICKETS.c
    own = list(conn.execute(select(m.id).where(func.lower(m.from_addr) == a)).scalars())
    digests = set(holding)
    digests |= set(conn.execute(select(m.digest).where(m.id.in_(own))).scalars())
    at = T_ATTACH.c
    attached = set(conn.execute(select(at.digest).where(at.message_pk.in_(own))).scalars())
    out.counts["attachments"] = conn.execute(delete(T_ATTACH).where(
        at.message_pk.in_(own))).rowcount
    conn.execute(update(T_MESSAGES).where(m.id.in_(own)).values(
        text=ERASED, quoted="", subject=ERASED, from_name=None))
    out.counts["messages"] = len(own)

    requested = out.found.requested
    subjects = [s for s in conn.execute(select(t.subject).where(t.id.in_(requested)))
                .scalars() if s and len(s.strip()) >= MIN_WORD and s != ERASED]
    conn.execute(update(T_TICKETS).where(t.id.in_(requested)).values(
        subject=ERASED, requester_name=None))
    conn.execute(update(T_MESSAGES).where(m.ticket_id.in_(requested)).values(quoted=""))
    if subjects:       # acknowledgements, replies and agents' notifications repeat it
        fix = _replacer([(s, ERASED) for s in subjects])
        o = T_OUTBOX.c
        _rewrite(conn, T_MESSAGES, m.ticket_id.in_(requested), [m.subject, m.text], fix)
        _rewrite(conn, T_EVENTS, T_EVENTS.c.ticket_id.in_(requested), [T_EVENTS.c.data], fix)
        _rewrite(conn, T_OUTBOX, o.ticket_id.in_(requested), [o.subject, o.last_error], fix)
    conn.execute(update(T_SURVEYS).where(T_SURVEYS.c.ticket_id.in_(requested))
                 .values(comment=None))

    i = T_INBOUND.c
    theirs = list(conn.execute(select(i.id).where(or_(
        func.lower(i.mail_from) == a, i.message_pk.in_(own)))).scalars())
    digests |= set(conn.execute(select(i.digest).where(i.id.in_(theirs))).scalars())
    o = T_OUTBOX.c
    owed = list(conn.execute(select(o.id).where(contains(o.to, f'"{a}"'))).scalars())
    digests |= delete_outbox(conn, owed)
    out.counts["outbox"] = len(owed)
    out.counts["survey_opt_outs"] = conn.execute(delete(T_OPT_OUTS).where(
        func.lower(T_OPT_OUTS.c.address) == a)).rowcount

    touched: set[int] = set()      # messages rewritten below
    address = _replacer([(a, person.token)], re.escape)
    names = _replacer([(n, ERASED) for n in person.own_names()], _word)

    def everywhere(value: Any) -> Any:
        return names(address(value))
    for table in Base.metadata.sorted_tables:
        if table.name in UNTOUCHED:
            continue
        columns = _text_columns(table)
        if not columns:
            continue
        changed = _rewrite(conn, table, or_(*(contains(c, n) for c in columns
                                               for n in person.needles())), columns, everywhere)
        if changed:
            out.rewritten[table.name] = len(changed)
        if table is T_MESSAGES:     # a name in others' mail too: searched no more
            touched = changed
    _local_part(conn, person, out.found)
    _words_of_models(conn, person, out)

    named = _local_in_blobs(conn, store, person, out.found)
    digests |= named
    # an attachment of theirs that does not name them, and that others' mail also has
    # (the same bytes: a logo, a form), stays theirs: only their rows went
    digests |= attached - referenced(conn, attached - holding - named)
    outgoing = list(conn.execute(select(o.id).where(o.digest.in_(sorted(digests)))).scalars())
    # held or queued mail that is theirs or names them: its bytes go, so it can never be
    # ticketed; the row stays as the record that it was accepted
    held = list(conn.execute(select(i.id).where(i.state.in_(UNSETTLED), or_(
        i.id.in_(theirs), i.digest.in_(sorted(digests))))).scalars())
    out.counts["held_or_queued"] = conn.execute(update(T_INBOUND).where(i.id.in_(held)).values(
        state="deleted", reason=f"erased at the requester's request at {now:%Y-%m-%d %H:%M} "
                                "UTC")).rowcount
    out.dropped = drop(store, conn, digests)
    out.counts["blobs"] = len(out.dropped.digests)
    out.delivered = sorted({*owed, *outgoing})
    conn.execute(update(T_OUTBOX).where(o.digest == NO_BLOB, o.status.in_(("queued",)))
                 .values(status="failed", last_error="its mail was removed (a requester's "
                                                     "erasure)"))
    reindex = list(conn.execute(select(m.id).where(
        or_(m.ticket_id.in_(out.found.all), m.id.in_(sorted(touched))),
        m.direction == "in")).scalars())
    search.unindex_messages(conn, reindex)
    search.index_messages(conn, [(r.id, r.subject, r.text) for r in conn.execute(
        select(m.id, m.subject, m.text).where(m.id.in_(reindex)))])
    if not dry_run:
        record(conn, now, "erase", person.token, out.as_dict())
    return out


def _local_part(conn: Connection, person: Person, found: Concerned) -> None:
    """Their address's local part as a word, on the tickets that concern them: a greeting,
    a signature. (Elsewhere the same word may be anyone's.) Not one others use too
    ("support", an agent's name: privacy.shared())."""
    if not person.theirs(person.local):
        return
    fix = _replacer([(person.local, ERASED)], _word)
    ids = found.all
    for table, where in ((T_TICKETS, T_TICKETS.c.id.in_(ids)),
                         (T_MESSAGES, T_MESSAGES.c.ticket_id.in_(ids)),
                         (T_EVENTS, T_EVENTS.c.ticket_id.in_(ids))):
        columns = _text_columns(table)
        _rewrite(conn, table, or_(*(contains(c, person.local) for c in columns)) & where,
                 columns, fix)


def _local_in_blobs(conn: Connection, store: BlobStore, person: Person,
                    found: Concerned) -> set[str]:
    """The stored mail of the tickets that concern them (messages, attachments, outgoing
    mail) that names their local part as a word: an agent's note, a greeting."""
    if not person.theirs(person.local):
        return set()
    word = re.compile(_word(person.local).encode(), re.IGNORECASE)
    m, at, o = T_MESSAGES.c, T_ATTACH.c, T_OUTBOX.c
    ids = found.all
    digests = set(conn.execute(select(m.digest).where(m.ticket_id.in_(ids))).scalars())
    digests |= set(conn.execute(select(at.digest).join(T_MESSAGES, m.id == at.message_pk)
                                .where(m.ticket_id.in_(ids))).scalars())
    digests |= set(conn.execute(select(o.digest).where(o.ticket_id.in_(ids))).scalars())
    named = set()
    for digest in digests - {NO_BLOB}:      # removed already (retention, an erasure)
        try:
            data = store.get(digest, conn)
        except BlobError:
            continue            # nothing readable left in it
        if word.search(data):
            named.add(digest)
    return named


def _words_of_models(conn: Connection, person: Person, out: Erasure) -> None:
    """Their words out of the problem proposals' shared words, and triage models whose
    vocabulary has them deleted (the next training makes one without them)."""
    words = person.words()
    p = T_PROPOSALS.c
    for pid, said in conn.execute(select(p.id, p.words)).all():
        kept = [w for w in said if str(w).lower() not in words]
        if kept != said:
            conn.execute(update(T_PROPOSALS).where(p.id == pid).values(words=kept))
    from ..ml.triage import Model, TriageError
    gone = []
    for mid, data in conn.execute(select(T_TRIAGE.c.id, T_TRIAGE.c.data)).all():
        try:
            terms = set(Model.from_bytes(bytes(data)).vocabulary.terms)
        except TriageError:
            continue
        if terms & words or person.address in terms:
            gone.append(mid)
    out.counts["triage_models"] = conn.execute(delete(T_TRIAGE).where(
        T_TRIAGE.c.id.in_(gone))).rowcount
