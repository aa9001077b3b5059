"""A real Dovecot for the IMAP tests: its own config, folders, users and ports.

Dovecot 2.3 (Debian's dovecot-imapd) runs from a config file of ours with its
own base_dir, a passwd-file passdb and a static userdb. It refuses uid 0 for
mail, so mail belongs to the system user `mail`, in a folder outside
pytest's private tmp (which that user could not enter). XOAUTH2 logins are
checked by Dovecot's oauth2 passdb against a small introspection endpoint
the fixture runs, as an identity provider would.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from http.server import HTTPServer
from pathlib import Path
from typing import Any

from httpjson import FormToJSON
from imapclient import IMAPClient

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

CONFIG = """\
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
first_valid_uid = 1
first_valid_gid = 1
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
mail_location = maildir:{d}/mail/%u
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {d}/oauth2.conf.ext
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=mail gid=mail home={d}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"""


OAUTH2 = """\
introspection_mode = post
introspection_url = http://127.0.0.1:{port}/introspect
username_attribute = username
active_attribute = active
active_value = true
"""


class _Introspection(FormToJSON):
    """The identity provider Dovecot asks whether an OAuth2 access token is good."""

    def answer(self, form: dict[str, str]) -> tuple[int, Any]:
        good = form.get("token") == Dovecot.token
        return 200, ({"active": good, "username": Dovecot.user} if good else {"active": False})


def available() -> bool:
    return os.path.exists(DOVECOT) and os.geteuid() == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dovecot:
    user, password, token = "desk", "s3cret pass", "valid-access-token"

    def __init__(self, extra: str = "") -> None:
        """extra: more Dovecot settings, e.g. a narrower imap_capability."""
        self.dir = Path(tempfile.mkdtemp(prefix="maildesk-dovecot-"))
        os.chmod(self.dir, 0o755)
        d = self.dir
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "2",
                        "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True)
        mail = pwd.getpwnam("mail")
        for sub in ("mail", "run", "state"):
            (d / sub).mkdir()
        os.chown(d / "mail", mail.pw_uid, mail.pw_gid)
        (d / "passwd").write_text(f"{self.user}:{{PLAIN}}{self.password}::::::\n")
        self.imap_port, self.imaps_port = _free_port(), _free_port()
        (d / "dovecot.conf").write_text(CONFIG.format(d=d, imap=self.imap_port,
                                                      imaps=self.imaps_port) + extra)
        self.idp = HTTPServer(("127.0.0.1", 0), _Introspection)
        threading.Thread(target=self.idp.serve_forever, daemon=True).start()
        (d / "oauth2.conf.ext").write_text(OAUTH2.format(port=self.idp.server_port))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Dovecot:
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.dir / "dovecot.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.imap_port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"dovecot exited: {self.log()}") from None
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not listen: {self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # its children may linger a moment and keep the pid file
        deadline = time.monotonic() + 10
        while (self.dir / "run" / "master.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def cleanup(self) -> None:
        self.stop()
        self.idp.shutdown()
        self.idp.server_close()      # shutdown() stops serving; this closes its socket
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        try:
            return (self.dir / "dovecot.log").read_text()[-3000:]
        except OSError:
            return ""

    def client(self) -> IMAPClient:
        """A client of the test's own (the customer's mail server side), over STARTTLS."""
        ctx = ssl.create_default_context(cafile=str(self.dir / "cert.pem"))
        c = IMAPClient("127.0.0.1", self.imap_port, ssl=False, timeout=30)
        c.starttls(ctx)
        c.login(self.user, self.password)
        return c

    def append(self, *raws: bytes, folder: str = "INBOX") -> None:
        with self.client() as c:
            for raw in raws:
                c.append(folder, raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))

    def mailbox(self, name: str = "support", **overrides: object) -> dict[str, object]:
        """maildesk's settings for this server (STARTTLS unless told otherwise)."""
        box: dict[str, object] = {
            "name": name, "host": "127.0.0.1", "port": self.imap_port, "tls": "starttls",
            "ca_file": str(self.dir / "cert.pem"), "username": self.user,
            "password": self.password, "poll_interval": 1}
        box.update(overrides)
        return box
