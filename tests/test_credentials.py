"""Secrets for IMAP logins: files, commands and OAuth2 token endpoints (a real HTTP peer)."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import HTTPServer
from pathlib import Path

import pytest
from httpjson import FormToJSON

from maildesk.config.schema import Mailbox
from maildesk.intake.credentials import CredentialError, TokenSource, password


def box(**kw: object) -> Mailbox:
    return Mailbox.model_validate({"name": "support", "host": "imap.example.com",
                                   "username": "desk@example.com", **kw})


@pytest.fixture
def token_endpoint() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    class Handler(FormToJSON):
        def answer(self, form: dict[str, str]) -> tuple[int, object]:
            seen.append(form)
            if form.get("refresh_token") != "refresh-1":
                return 400, {"error": "invalid_grant"}
            return 200, {"access_token": f"access-{len(seen)}", "expires_in": 3600}

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/token", seen
    server.shutdown()
    server.server_close()


def test_refresh_token_grant_gets_and_caches_an_access_token(
        token_endpoint: tuple[str, list[dict[str, str]]], tmp_path: Path) -> None:
    url, seen = token_endpoint
    (tmp_path / "rt").write_text("refresh-1\n")
    (tmp_path / "cs").write_text("client-secret\n")
    src = TokenSource(box(oauth2={"token_url": url, "client_id": "cid",
                                  "refresh_token_file": str(tmp_path / "rt"),
                                  "client_secret_file": str(tmp_path / "cs")}))
    assert src.get() == "access-1"
    assert src.get() == "access-1", "cached until shortly before it expires"
    assert seen == [{"grant_type": "refresh_token", "client_id": "cid",
                     "refresh_token": "refresh-1", "client_secret": "client-secret"}]


def test_refused_refresh_token_says_what_the_endpoint_said(
        token_endpoint: tuple[str, list[dict[str, str]]], tmp_path: Path) -> None:
    url, _ = token_endpoint
    (tmp_path / "rt").write_text("stale\n")
    src = TokenSource(box(oauth2={"token_url": url, "client_id": "cid",
                                  "refresh_token_file": str(tmp_path / "rt")}))
    with pytest.raises(CredentialError, match="imap mailbox support oauth2: token endpoint"):
        src.get()


def test_token_and_password_commands_run_without_a_shell(tmp_path: Path) -> None:
    assert TokenSource(box(oauth2={"token_command": "echo tok-123"})).get() == "tok-123"
    assert password(box(password_command="printf 'p w'")) == "p w"
    with pytest.raises(CredentialError, match="password_command: the command exited 1"):
        password(box(password_command="false"))
    marker = tmp_path / "pwned"
    # a shell would run the second command; we pass it to echo as arguments
    assert password(box(password_command=f"echo x; touch {marker}")) == f"x; touch {marker}"
    assert not marker.exists()


def test_missing_password_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(CredentialError,
                       match=r"imap mailbox support password_file: cannot read .*nope"):
        password(box(password_file=str(tmp_path / "nope")))
