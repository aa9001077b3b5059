"""The state the `maildesk` group hands its subcommands.

Made for every command, `maildesk GROUP --help` included: it imports the settings schema
(pydantic), the App (SQLAlchemy) and the rest only when a command asks for settings or an
App, so that help and the commands that need neither start in a tenth of the time.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from .output import EX_CANTCREAT, EX_CONFIG, EX_NOINPUT, EX_TEMPFAIL, fail

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from ..app import App
    from ..config.schema import Settings
    from ..desk import StartupError

T = TypeVar("T")


class Obj:
    """What the group hands its subcommands: how to get settings and an App."""

    def __init__(self, config: str | None, daemon: bool = False) -> None:
        self.config = config
        self.daemon = daemon
        self._settings: Settings | None = None

    @cached_property
    def path(self) -> Path | None:
        """The configuration file (--config, else $MAILDESK_CONFIG); None: the default."""
        from ..config.load import config_path
        return config_path(self.config)

    @property
    def settings(self) -> Settings:
        """The settings, loaded on first use; the log is then set up as they say."""
        from ..config.load import ConfigError, load_settings
        settings = self._settings
        if settings is None:
            try:
                settings = self._settings = load_settings(self.path)
            except ConfigError as e:
                fail(str(e), EX_CONFIG)
            setup_logging(settings, daemon=self.daemon)
        return settings

    def app(self, existing: bool = False, unwritable: int = EX_CANTCREAT) -> App:
        """The App, closed (its pack files, its connections) when the command ends; or one
        line and the exit code of what keeps it from opening.

        existing: for a command that reads (or changes what is there): a desk that is not
        there is 66 and nothing is made. Without it the desk is made, as `serve`, `ingest`
        and `jobs run` need. unwritable: the code for a data directory that cannot be
        written (`ingest` says 75, so that the MTA keeps the mail).
        """
        from ..app import App
        settings = self.settings
        app = opened(lambda: App.open(settings, existing=existing), unwritable)
        click.get_current_context().call_on_close(app.close)
        return app

    def reader(self) -> Engine:
        """The desk's database alone, for a command that only reads it (`tickets list`):
        the schema checked as app(existing=True) checks it, with the same line and exit
        code for each problem, but none of the App's templates, rules, SLA calendars or
        knowledge base, which such a command never uses (nor their imports: the ORM,
        jinja2). Disposed of when the command ends."""
        from ..desk import open_engine
        settings = self.settings
        engine = opened(lambda: open_engine(settings, settings.database.auto_upgrade,
                                            existing=True))
        click.get_current_context().call_on_close(engine.dispose)
        return engine


def opened(opening: Callable[[], T], unwritable: int = EX_CANTCREAT) -> T:
    """What opening() opens (an App, an engine); or one line and the exit code of what
    keeps it from opening: 66 no desk, `unwritable` a data directory that cannot be
    written, else 75 or 78 (startup_exit)."""
    from ..desk import DataDirError, NoDesk, StartupError
    try:
        return opening()
    except NoDesk as e:
        fail(str(e), EX_NOINPUT)
    except DataDirError as e:
        fail(str(e), unwritable)
    except StartupError as e:
        fail(str(e), startup_exit(e))


def startup_exit(e: StartupError) -> int:
    """A StartupError's exit code: 75 when it may go away by itself, 78 when a person must
    change the configuration."""
    return EX_TEMPFAIL if e.temporary else EX_CONFIG


def setup_logging(settings: Settings, daemon: bool) -> None:
    """The log as settings.log has it (maildesk/logs.py), in its format for every command:
    a `fetch` or `jobs run` from cron logs the lines `serve` would. Only the daemon logs
    at log.level; another command's own output says what it did, so its log begins at
    WARNING (a `tickets close` does not also log an INFO line on the operator's terminal).
    The counts of repeats still held back are written when the process ends."""
    import atexit

    from ..config.durations import parse_duration
    from ..logs import setup
    cfg = settings.log
    level = cfg.level if daemon else max(cfg.level.upper(), "WARNING", key=_severity)
    repeats = setup(level, cfg.format, cfg.repeats, parse_duration(cfg.repeat_window))
    atexit.register(repeats.flush, True)


def _severity(level: str) -> int:
    import logging
    return logging.getLevelName(level.upper())
