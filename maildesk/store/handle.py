"""What the desk's outer parts need of it: its settings and where its mail is kept.

The SMTP listener, the IMAP poller and the outbox's delivery worker take a
Store, not the App: they move mail in and out and decide nothing about
tickets, so they import nothing that does. The App satisfies it.
"""
from __future__ import annotations

from typing import Protocol

from sqlalchemy import Engine

from ..config.schema import Settings
from .blobs import BlobStore


class Store(Protocol):
    @property
    def settings(self) -> Settings: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def blobs(self) -> BlobStore: ...
