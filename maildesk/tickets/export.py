"""`maildesk requester export`: what the desk holds about a person, as one zip (a GDPR
subject access request, art. 15).

For each ticket that concerns them (privacy.py): its fields, its events, and its
messages as JSON with each raw mail (.eml) and attachment as stored. Of the messages,
only the mail the person wrote and the mail sent to them (From, To, Cc): never the
mail to and from agents (notifications name other customers' tickets, and both carry
the agents' reply addresses), nor others' acknowledgements; the agents' internal
notes' text only when asked (--internal): they are the desk's working notes and often
name other people, so an operator reads them before they go out.

No token address leaves in an export, not even the person's own (it would let whoever
gets the zip act as them on the ticket): each is written as the plain support address
(`support+md-12-<code>@desk` as `support@desk`), in the JSON and in the raw mail. The
desk's own mail to them (acknowledgements, replies, surveys) is given as its text in
the JSON, not as raw mail: its encoded parts are full of codes. A raw mail or
attachment that still holds a code (encoded, or split across lines) is left out, and
index.json says so. The zip's paths are made of the desk's own
names and ids (`tickets/MD-12/messages/345.eml`); an attachment's name from the mail
is kept after its id with every character that could make a path or a control
sequence replaced.

index.json says what is in the zip: the person, when, and each ticket's files, and
which raw mails and attachments could not be read (removed by retention, or damaged):
the export names them and goes on.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from ..store.blobs import BlobError, BlobStore, is_digest
from ..store.tables import T_ATTACH, T_EVENTS, T_MESSAGES, T_TICKETS
from .privacy import Person, concerned
from .refs import carries_token, plain

_UNSAFE_NAME = re.compile(r"[^\w.\- ]+")


def safe_name(name: str | None, most: int = 80) -> str:
    """An attachment's file name fit for a path: its last component only, no control or
    path characters, no leading dots (no '..', no hidden file), not empty."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = _UNSAFE_NAME.sub("_", base).strip(" ._")[:most].strip(" ._")
    return base or "attachment"


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


@dataclass
class Exported:
    path: Path
    tickets: int = 0
    messages: int = 0
    raw: int = 0
    attachments: int = 0
    events: int = 0
    unreadable: list[str] = field(default_factory=list)   # zip paths left out, and why

    def counts(self) -> dict[str, int]:
        return {"tickets": self.tickets, "messages": self.messages, "raw": self.raw,
                "attachments": self.attachments, "events": self.events,
                "unreadable": len(self.unreadable)}


def _blob(store: BlobStore, conn: Connection, digest: str, where: str, prefix: str,
          out: Exported, mail: bool) -> bytes | None:
    """The stored bytes, its token addresses made plain (mail: read as latin-1, which keeps
    every byte); None, said in out, when unreadable or when a code is still in them."""
    if not is_digest(digest):
        out.unreadable.append(f"{where}: removed (retention or an erasure)")
        return None
    try:
        data = store.get(digest, conn)
    except BlobError as e:
        out.unreadable.append(f"{where}: {e.problem}")
        return None
    parts: list[Any] = [data]
    if mail:
        data = parts[0] = plain(data.decode("latin-1"), prefix).encode("latin-1")
        parts += [p.get_payload(decode=True) for p in message_from_bytes(data).walk()
                  if not p.is_multipart()]
    if any(isinstance(p, bytes) and carries_token(p, prefix) for p in parts):
        out.unreadable.append(f"{where}: left out, it holds a reply code of the desk")
        return None
    return data


def export(conn: Connection, store: BlobStore, person: Person, path: Path, now: datetime,
           prefix: str, internal: bool = False, force: bool = False) -> Exported:
    """Write the zip of person's tickets to path, whole or not at all (written aside,
    then renamed); a file already at path is replaced only with force (else
    FileExistsError, checked as the zip is put in place)."""
    found = concerned(conn, person)
    requested = set(found.requested)
    out = Exported(path)
    index: dict[str, Any] = {"address": person.address, "names": list(person.names),
                             "exported_at": now.isoformat(), "internal_notes": internal,
                             "tickets": []}
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as z:
            for ticket_id in found.all:
                index["tickets"].append(_ticket(z, conn, store, person, ticket_id,
                                                ticket_id in requested, internal, prefix,
                                                out))
            index["unreadable"] = out.unreadable
            index["counts"] = out.counts()
            z.writestr("index.json", plain(json.dumps(index, indent=2, ensure_ascii=False),
                                           prefix))
        if force:
            part.replace(path)
        else:
            os.link(part, path)     # never over a file that is there

    finally:
        part.unlink(missing_ok=True)
    return out


def _ticket(z: zipfile.ZipFile, conn: Connection, store: BlobStore, person: Person,
            ticket_id: int, requested: bool, internal: bool, prefix: str,
            out: Exported) -> dict[str, Any]:
    t = conn.execute(select(T_TICKETS).where(T_TICKETS.c.id == ticket_id)).mappings().one()
    folder = f"tickets/{safe_name(t['ref'])}"
    fields = {k: _iso(v) for k, v in t.items() if k not in ("id", "linked_to")}
    if t["linked_to"] is not None:
        fields["linked_to"] = conn.execute(select(T_TICKETS.c.ref).where(
            T_TICKETS.c.id == t["linked_to"])).scalar()
    m = T_MESSAGES.c
    rows = conn.execute(select(T_MESSAGES).where(m.ticket_id == ticket_id)
                        .order_by(m.id)).mappings().all()
    shown = [r for r in rows if _theirs(r, person.address)
             or (internal and r["visibility"] == "internal" and r["direction"] == "in")]
    skipped = {r["message_id"] for r in rows} - {r["message_id"] for r in shown}
    attachments: dict[int, list[Any]] = {}
    for a in conn.execute(select(T_ATTACH).where(
            T_ATTACH.c.message_pk.in_([r["id"] for r in shown])).order_by(T_ATTACH.c.id)
            ).mappings():
        attachments.setdefault(a["message_pk"], []).append(a)
    messages = []
    for r in shown:
        eml = f"{folder}/messages/{r['id']}.eml"
        ours = _theirs(r, person.address)     # a note: its text only, never its mail
        raw = _blob(store, conn, r["digest"], eml, prefix, out, True) \
            if ours and r["direction"] == "in" else None
        if raw is not None:
            z.writestr(eml, raw)
            out.raw += 1
        files = []
        for a in attachments.get(r["id"], []):
            name = f"{folder}/attachments/{a['id']}-{safe_name(a['filename'])}"
            data = _blob(store, conn, a["digest"], name, prefix, out, False) if ours \
                else None
            if data is not None:
                z.writestr(name, data)
                out.attachments += 1
            files.append({"filename": a["filename"], "content_type": a["content_type"],
                          "size": a["size"], "file": name if data is not None else None})
        messages.append({
            "id": r["id"], "message_id": r["message_id"], "direction": r["direction"],
            "visibility": r["visibility"], "from": r["from_addr"], "from_name": r["from_name"],
            "to": list(r["to"]), "cc": list(r["cc"]), "subject": r["subject"],
            "date": _iso(r["date"]), "text": r["text"], "quoted": r["quoted"],
            "eml": eml if raw is not None else None, "attachments": files})
    out.messages += len(messages)
    events = [{"kind": e["kind"], "at": _iso(e["at"]), "actor": e["actor"], "data": e["data"]}
              for e in conn.execute(select(T_EVENTS).where(T_EVENTS.c.ticket_id == ticket_id)
                                    .order_by(T_EVENTS.c.id)).mappings()
              if (internal or e["kind"] != "note.added")
              and (e["kind"] == "agent.replied"    # they got its relay
                   or (e["data"] or {}).get("message_id") not in skipped)]
    out.events += len(events)
    out.tickets += 1
    name = f"{folder}/ticket.json"
    z.writestr(name, plain(json.dumps({"ticket": fields, "messages": messages, "events": events},
                                      indent=2, ensure_ascii=False, default=str), prefix))
    return {"ref": t["ref"], "role": "requester" if requested else "participant",
            "file": name, "messages": len(messages), "events": len(events)}


def _theirs(row: Any, address: str) -> bool:
    """A mail the person wrote, or one sent to them."""
    return row["from_addr"].lower() == address or \
        address in {a.lower() for a in (*row["to"], *row["cc"])}
