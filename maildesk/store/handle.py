"""What the desk's outer parts need of it: its settings and where its mail is kept.

The SMTP listener, the IMAP poller and the outbox's delivery worker take a
Store, not the App: they move mail in and out and decide nothing about
tickets, so they import nothing that does. The App satisfies it, and so does BareStore,
where nothing else is needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Engine

from ..config.schema import Settings
from .blob_rows import open_blobs
from .blobs import BlobStore
from .db import make_engine


class Store(Protocol):
    @property
    def settings(self) -> Settings: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def blobs(self) -> BlobStore: ...


@dataclass
class BareStore:
    """A Store without the App: the settings, an engine and the blobs, for a process that
    only stores mail (`maildesk ingest --queue`). It loads no templates, rules, articles
    or keys, and imports nothing that reads mail."""

    settings: Settings
    engine: Engine
    blobs: BlobStore

    @classmethod
    def open(cls, settings: Settings) -> BareStore:
        engine = make_engine(settings.database_url)
        try:
            return cls(settings, engine, open_blobs(settings, engine))
        except BaseException:
            engine.dispose()
            raise

    def close(self) -> None:
        self.blobs.close()
        self.engine.dispose()
