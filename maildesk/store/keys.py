"""The reply-token keys, kept in the desk's database.

A token in a reply address (tickets/refs.py) is signed by the node that sent
the mail and checked by whichever node the answer reaches; so every node must
hold the same keys, and a new key must reach them all. A file per node did
neither (issue 18: each node made its own, and 84 of 92 agent commands were
refused on the node that had not signed them). The database every node
already shares holds them instead, by generation: the newest signs, the one
before it still verifies (mail sent before a rotation can still be answered),
older ones verify nothing. Nodes read them again with each heartbeat, so a
rotation reaches every node within seconds.

A desk configured with `secret_file` keeps its keys in files of its own
choosing (app.py); this module is the default.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from .db import upsert
from .tables import T_KEYS

ACCEPTED = 2        # generations whose tokens are good: the newest and the one before
log = logging.getLogger("maildesk.keys")


def new_secret() -> str:
    return secrets.token_hex(32)


def read(conn: Connection) -> tuple[bytes, ...]:
    """The keys tokens are checked with, newest (the one that signs) first."""
    rows = conn.execute(select(T_KEYS.c.secret).order_by(T_KEYS.c.generation.desc())
                        .limit(ACCEPTED)).scalars().all()
    return tuple(s.encode() for s in rows)


def load(engine: Engine, legacy: Path) -> tuple[bytes, ...]:
    """The desk's keys, made on first use. A desk from before keys were kept here has its
    key in `legacy` (<data_dir>/secret.key): that becomes the first generation, so tokens
    in mail already sent stay good. Two nodes starting at once both insert generation 1;
    one insert wins and both read the winner."""
    with engine.begin() as conn:
        keys = read(conn)
        if keys:
            _warn_if_other(legacy, keys)
            return keys
        old = _legacy(legacy)
        conn.execute(upsert(conn, T_KEYS).values(
            generation=1, secret=old or new_secret(), created_at=datetime.now(timezone.utc))
            .on_conflict_do_nothing(index_elements=["generation"]))
        if old:
            log.info("the reply-token key in %s is now kept in the database, shared by every "
                     "node; the file is no longer read", legacy)
        return read(conn)


def _legacy(path: Path) -> str | None:
    try:
        secret = path.read_bytes().strip().decode("ascii")
    except (OSError, UnicodeDecodeError):
        return None
    return secret if len(secret) >= 16 else None


def _warn_if_other(legacy: Path, keys: tuple[bytes, ...]) -> None:
    """A node that made a key file of its own before joining a desk: tokens it signed with
    it are not accepted any more, which its operator should hear of once."""
    old = _legacy(legacy)
    if old and old.encode() not in keys:
        log.warning("%s holds a reply-token key that is not the desk's: tokens this node "
                    "signed with it before are refused; to keep them good for a while, set "
                    "secret_file and previous_secret_file (README: Several nodes)", legacy)


def rotate(conn: Connection, now: datetime) -> int:
    """A new key, which signs from now on; the one it replaces still verifies, and the one
    before that stops. Returns the new generation."""
    generation = int(conn.scalar(select(func.max(T_KEYS.c.generation))) or 0) + 1
    conn.execute(T_KEYS.insert().values(generation=generation, secret=new_secret(),
                                        created_at=now))
    return generation


def listing(conn: Connection) -> list[dict[str, Any]]:
    """Every generation with what it does now; a fingerprint, never the key."""
    rows = conn.execute(select(T_KEYS).order_by(T_KEYS.c.generation.desc())).mappings().all()
    return [{"generation": r["generation"], "created_at": r["created_at"],
             "fingerprint": hashlib.sha256(r["secret"].encode()).hexdigest()[:16],
             "use": "signs and verifies" if i == 0 else
                    "verifies" if i < ACCEPTED else "retired"}
            for i, r in enumerate(rows)]
