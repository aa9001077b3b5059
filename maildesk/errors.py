"""The root of maildesk's own exceptions.

Every error maildesk raises on purpose derives from MaildeskError, so a
caller (the CLI, the daemon) can tell "maildesk said no, with a reason a
person can act on" from a bug; each keeps its own class for its own handler.
"""
from __future__ import annotations


class MaildeskError(Exception):
    """Something maildesk refuses or cannot do, said in one line."""
