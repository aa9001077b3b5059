"""Secrets for IMAP logins: a file, a command, or an OAuth2 access token.

Nothing here goes through a shell: commands are split like a shell would and
run directly, so a secret or a path with spaces in the config is never
interpreted. Errors say which mailbox and which setting, never the secret.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass

from ..config.schema import Mailbox, OAuth2
from ..errors import MaildeskError


class CredentialError(MaildeskError):
    """The secret could not be obtained; the message names the setting."""


def _run(command: str, what: str) -> str:
    try:
        out = subprocess.run(shlex.split(command), capture_output=True, timeout=30, check=True)
    except (OSError, ValueError) as e:
        raise CredentialError(f"{what}: cannot run {command.split()[0]!r}: {e}") from None
    except subprocess.TimeoutExpired:
        raise CredentialError(f"{what}: the command took longer than 30 s") from None
    except subprocess.CalledProcessError as e:
        first = e.stderr.decode(errors="replace").strip().splitlines()[:1]
        raise CredentialError(f"{what}: the command exited {e.returncode}"
                              + (f": {first[0]}" if first else "")) from None
    value = out.stdout.decode(errors="replace").strip()
    if not value:
        raise CredentialError(f"{what}: the command printed nothing")
    return value


def _read(path: object, what: str) -> str:
    try:
        with open(str(path), encoding="utf-8") as f:
            value = f.read().strip()
    except OSError as e:
        raise CredentialError(f"{what}: cannot read {path}: {e.strerror}") from None
    if not value:
        raise CredentialError(f"{what}: {path} is empty")
    return value


def password(box: Mailbox) -> str:
    where = f"imap mailbox {box.name}"
    if box.password is not None:
        return box.password
    if box.password_file is not None:
        return _read(box.password_file, f"{where} password_file")
    if box.password_command is not None:
        return _run(box.password_command, f"{where} password_command")
    raise CredentialError(f"{where}: no password configured")


@dataclass
class _Token:
    value: str
    expires: float


class TokenSource:
    """Access tokens for XOAUTH2, refreshed shortly before they expire."""

    def __init__(self, box: Mailbox) -> None:
        assert box.oauth2 is not None
        self.cfg: OAuth2 = box.oauth2
        self.where = f"imap mailbox {box.name} oauth2"
        self.token: _Token | None = None

    def get(self) -> str:
        if self.token is None or time.time() > self.token.expires - 60:
            self.token = self._fetch()
        return self.token.value

    def _fetch(self) -> _Token:
        cfg = self.cfg
        if cfg.token_command is not None:
            return _Token(_run(cfg.token_command, f"{self.where} token_command"),
                          time.time() + 300)
        assert cfg.token_url and cfg.client_id and cfg.refresh_token_file
        form = {"grant_type": "refresh_token", "client_id": cfg.client_id,
                "refresh_token": _read(cfg.refresh_token_file, f"{self.where} refresh_token_file")}
        if cfg.client_secret_file is not None:
            form["client_secret"] = _read(cfg.client_secret_file,
                                          f"{self.where} client_secret_file")
        req = urllib.request.Request(cfg.token_url, data=urllib.parse.urlencode(form).encode(),
                                     headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                body = json.loads(resp.read())
        except (OSError, ValueError) as e:
            raise CredentialError(f"{self.where}: token endpoint {cfg.token_url}: {e}") from None
        if "access_token" not in body:
            raise CredentialError(f"{self.where}: token endpoint said "
                                  f"{body.get('error', 'no access_token')}")
        return _Token(str(body["access_token"]), time.time() + float(body.get("expires_in", 300)))
