"""Agents and the knowledge base by mail (issue 19): `#kb SLUG` sends published articles to
the customer with the reply, `#kb new` keeps the answer as a draft article for review;
through the real pipeline, on SQLite and PostgreSQL."""
from __future__ import annotations

import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import mail
from sqlalchemy import update
from test_agents import DESK, PIPE, agent_mail, agent_words, reply_token, sent, show

from maildesk.app import App
from maildesk.kb.articles import Article, load
from maildesk.pipeline.run import drain, ingest
from maildesk.pipeline.stages import STAGES
from maildesk.store.models import Inbound

ARTICLES = {
    "reset-vpn-password.md": "---\ntitle: Reset your VPN password\nstatus: published\n---\n"
                             "Open https://vpn.example.org/reset and follow the steps.\n",
    "printer-jam.md": "---\ntitle: Clear a printer jam\nstatus: published\nqueues: [general]\n"
                      "---\nOpen tray 2 and pull the green lever.\n",
    "vpn-internals.md": "---\ntitle: VPN concentrator notes\nstatus: published\n"
                        "audience: agents\n---\nThe admin password is in the vault.\n",
    "new-laptop.md": "---\ntitle: Your new laptop\nstatus: draft\n---\nNot reviewed yet.\n",
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    kb = tmp_path / "kb"
    kb.mkdir()
    for name, text in ARTICLES.items():
        (kb / name).write_text(text, encoding="utf-8")
    return kb


@pytest.fixture
def app(make_app: Callable[..., App], db_url: str, folder: Path) -> App:
    app = make_app(db_url, desk=DESK, kb={"folder": str(folder)})
    assert len(app.kb.articles) == len(ARTICLES)
    return app


def events(app: App, kind: str) -> list[dict[str, Any]]:
    return [e for e in show(app, "MD-1")["events"] if e["kind"] == kind]


def to_customer(app: App) -> list[str]:
    """The text of every mail on MD-1 that went to the customer."""
    return [m.get_body(("plain",)).get_content() for m in sent(app, "MD-1")  # type: ignore[union-attr]
            if m["To"].addresses[0].addr_spec == "ana@customer.test"]


def bob(app: App, body: str) -> None:
    ingest(app, [(agent_mail("bob", reply_token(app, "bob"), body), PIPE)])


def drafted(folder: Path) -> list[Article]:
    """The drafts as `maildesk kb check` reads them: the whole folder must load."""
    return [a for a in load(folder, {"general"}) if a.path.parent == folder / "drafts"]


# -- #kb SLUG --------------------------------------------------------------------------

def test_kb_sends_the_articles_after_the_reply_and_records_them(app: App) -> None:
    ingest(app, [(mail(), PIPE)])
    bob(app, "#kb printer-jam, reset-vpn-password\n#kb printer-jam\n\nThis should help.\n")
    out = sent(app, "MD-1")[-1]
    assert out["To"].addresses[0].addr_spec == "ana@customer.test"
    assert agent_words(out) == (
        "This should help.\n\n"
        "Clear a printer jam\n===================\n\nOpen tray 2 and pull the green lever.\n\n"
        "Reset your VPN password\n=======================\n\n"
        "Open https://vpn.example.org/reset and follow the steps.")
    assert "#kb" not in out.as_string()
    (e,) = events(app, "kb.sent")
    assert (e["actor"], e["data"]["articles"]) == ("agent:bob",
                                                   ["printer-jam", "reset-vpn-password"])
    assert show(app, "MD-1")["status"] == "pending"


def test_a_reply_of_kb_alone_still_reaches_the_customer(app: App) -> None:
    ingest(app, [(mail(), PIPE)])
    bob(app, "#kb printer-jam\n")
    assert agent_words(sent(app, "MD-1")[-1]) == \
        "Clear a printer jam\n===================\n\nOpen tray 2 and pull the green lever."
    replied = events(app, "agent.replied")[-1]
    assert replied["data"]["silent"] is False
    assert events(app, "kb.sent")[0]["data"]["articles"] == ["printer-jam"]


@pytest.mark.parametrize("body, error", [
    ("#kb reset-vpn-pasword", "line 2: #kb reset-vpn-pasword: no article 'reset-vpn-pasword' "
                              "(near: reset-vpn-password)"),
    ("#kb no-such-thing", "line 2: #kb no-such-thing: no article 'no-such-thing'"),
    ("#kb vpn-internals", "line 2: #kb vpn-internals: article vpn-internals is for agents"),
    ("#kb new-laptop", "line 2: #kb new-laptop: article new-laptop is a draft"),
    ("#kb", "line 2: #kb: #kb needs an article's slug"),
    ("#kb printer-jam\n#note", "#kb: an article goes to the customer with a reply, and a "
                               "note or #silent reaches nobody"),
    ("#kb printer-jam\n#silent", "a note or #silent reaches nobody"),
])
def test_a_kb_line_that_cannot_be_sent_refuses_the_whole_mail(app: App, body: str,
                                                               error: str) -> None:
    ingest(app, [(mail(), PIPE)])
    before = to_customer(app)
    bob(app, f"#assign me\n{body}\n\nHello customer.\n")
    t = show(app, "MD-1")
    assert t["assignee"] is None and t["status"] == "new", "no command ran"
    answer = sent(app, "MD-1")[-1]
    assert answer["To"].addresses[0].addr_spec == "bob@desk.test"
    text = answer.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert error in text, text
    assert "#kb SLUG" in text, "the help lists the command"
    assert to_customer(app) == before, "nothing relayed"
    assert "The admin password" not in "".join(m.as_string() for m in sent(app, "MD-1"))
    assert not events(app, "kb.sent")


def test_kb_on_the_note_address_is_refused(app: App) -> None:
    ingest(app, [(mail(), PIPE)])
    ingest(app, [(agent_mail("bob", reply_token(app, "bob", "note"), "#kb printer-jam\n"),
                  PIPE)])
    assert "a note or #silent reaches nobody" in \
        sent(app, "MD-1")[-1].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert len(to_customer(app)) == 1 and not events(app, "kb.sent")


@pytest.mark.parametrize("body", ["#kb printer-jam\n\nHello.\n", "#kb new\n\nHello.\n"])
def test_kb_without_a_knowledge_base_is_refused(make_app: Callable[..., App], db_url: str,
                                                body: str) -> None:
    app = make_app(db_url, desk=DESK)
    ingest(app, [(mail(), PIPE)])
    bob(app, body)
    text = sent(app, "MD-1")[-1].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "this desk has no knowledge base (kb.folder)" in text
    assert len(to_customer(app)) == 1, "only the acknowledgement"


# -- #kb new ---------------------------------------------------------------------------

def test_kb_new_keeps_the_answer_as_a_draft_and_relays_it(app: App, folder: Path) -> None:
    ingest(app, [(mail(), PIPE)])
    bob(app, "#kb new\n#status resolved\n\nOpen tray 2 and pull the green lever, then "
             "close it.\n")
    (draft,) = drafted(folder)
    assert draft.path == folder / "drafts" / "printer-on-floor-2-is-jammed.md"
    assert (draft.title, draft.status, draft.owner, draft.source, draft.queues,
            draft.audience, draft.lang) == ("Printer on floor 2 is jammed", "draft", "bob",
                                            "MD-1", ("general",), "customers", "en")
    assert draft.body == "Open tray 2 and pull the green lever, then close it."
    assert stat.S_IMODE(draft.path.stat().st_mode) == 0o640
    assert [p.name for p in (folder / "drafts").iterdir()] == [draft.path.name], "no tmp left"
    (e,) = events(app, "kb.drafted")
    assert e["data"] == e["data"] | {"slug": "printer-on-floor-2-is-jammed",
                                     "path": str(draft.path)}
    out = sent(app, "MD-1")[-1]
    assert agent_words(out) == "Open tray 2 and pull the green lever, then close it."
    assert "#kb" not in out.as_string()
    assert show(app, "MD-1")["status"] == "resolved"


def test_kb_new_drafts_the_last_public_reply_under_the_name_given(app: App,
                                                                  folder: Path) -> None:
    ingest(app, [(mail(), PIPE)])
    bob(app, "#kb new\n#queue nowhere\n")
    text = sent(app, "MD-1")[-1].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "#kb new: nothing to draft from" in text and "no queue 'nowhere'" in text
    assert not (folder / "drafts").exists()
    bob(app, "Pull the green lever.\n")
    bob(app, "#note\nThe lever is fragile.\n")
    relayed = len(to_customer(app))
    bob(app, "#kb new Printer: the green lever\n")
    (draft,) = drafted(folder)
    assert (draft.slug, draft.title, draft.body) == \
        ("printer-the-green-lever", "Printer: the green lever", "Pull the green lever.")
    assert len(to_customer(app)) == relayed, "no text: nothing relayed"
    bob(app, "#kb new, lever-howto\n")
    assert {(a.slug, a.title) for a in drafted(folder)} >= {
        ("lever-howto", "Printer on floor 2 is jammed")}


@pytest.mark.parametrize("subject, name, slug", [
    ("../../etc/passwd", "", "etc-passwd"),
    ("..", "", "answer-md-1"),
    (".bashrc", "", "bashrc"),
    ("Drucker: Fach 2 klemmt – “schon wieder”", "", "drucker-fach-2-klemmt-schon-wieder"),
    ("打印机卡纸了", "", "answer-md-1"),
    ("x" * 300, "", "x" * 60),
    ("Printer", "../../../tmp/owned", "tmp-owned"),
    ("Printer", "/etc/cron.d/x", "etc-cron-d-x"),
    ("Printer", "..", "answer-md-1"),
])
def test_hostile_subjects_and_names_give_safe_files_inside_drafts(
        app: App, folder: Path, subject: str, name: str, slug: str) -> None:
    ingest(app, [(mail(subject=subject), PIPE)])
    bob(app, f"#kb new {name}\n\nThe answer.\n")
    (draft,) = drafted(folder)
    assert draft.path == folder / "drafts" / f"{slug}.md"
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]{0,59}", draft.slug)
    assert "\n" not in draft.title and draft.title
    assert not (folder.parent / "tmp").exists() and not Path("/tmp/owned.md").exists()


def test_a_control_character_in_the_title_is_dropped(app: App, folder: Path) -> None:
    ingest(app, [(mail(subject="VPN\u202e fails\u200b again"), PIPE)])
    bob(app, "#kb new\n\nReconnect.\n")
    (draft,) = drafted(folder)
    assert draft.title == "VPN fails again"


def test_a_draft_never_overwrites_a_file_or_takes_a_slug_in_use(
        make_app: Callable[..., App], db_url: str, folder: Path) -> None:
    (folder / "drafts").mkdir()
    mine = "---\ntitle: Someone else's\n---\nTheirs.\n"
    (folder / "drafts" / "printer-on-floor-2-is-jammed.md").write_text(mine)
    (folder / "printer-on-floor-2-is-jammed-2.md").write_text(mine)    # a slug in use
    app = make_app(db_url, desk=DESK, kb={"folder": str(folder)})
    ingest(app, [(mail(), PIPE)])
    bob(app, "#kb new\n\nPull the lever.\n")
    assert (folder / "drafts" / "printer-on-floor-2-is-jammed.md").read_text() == mine
    new = [a for a in drafted(folder) if a.source == "MD-1"]
    assert [a.slug for a in new] == ["printer-on-floor-2-is-jammed-3"]


def test_a_retried_mail_finds_its_own_draft(app: App, folder: Path) -> None:
    """A mail whose transaction rolls back after the draft was written (here: a crash in a
    later stage, so the mail is quarantined) and runs again writes no second draft."""
    crashes = [RuntimeError("a later stage failed")]

    def crash_once(ctx: Any, w: Any) -> None:
        if crashes:
            raise crashes.pop()
    ingest(app, [(mail(), PIPE)])
    app.stages = (*STAGES, ("crash", crash_once))
    bob(app, "#kb new\n\nPull the lever.\n")
    assert not events(app, "kb.drafted"), "rolled back"
    (first,) = drafted(folder)
    with app.engine.begin() as c:
        c.execute(update(Inbound).where(Inbound.state == "quarantined").values(state="queued"))
    drain(app)
    (again,) = drafted(folder)
    assert again.path == first.path
    (e,) = events(app, "kb.drafted")
    assert e["data"]["path"] == str(first.path)


def test_an_import_of_old_mail_writes_no_draft(app: App, folder: Path) -> None:
    """`maildesk ingest --history` replays what happened long ago: nothing outside the
    desk's database, as it sends no mail."""
    ingest(app, [(mail(), PIPE)], history=True)
    ingest(app, [(agent_mail("bob", reply_token(app, "bob"), "#kb new\n\nPull the lever.\n"),
                  PIPE)], history=True)
    assert events(app, "agent.replied"), "the reply was taken"
    assert not (folder / "drafts").exists() and not events(app, "kb.drafted")


def test_a_draft_holds_no_reply_or_note_address_of_ours(app: App, folder: Path) -> None:
    """A draft may be published and sent to anyone: the bearer codes are redacted."""
    ingest(app, [(mail(), PIPE)])
    note = reply_token(app, "bob", "note")
    bob(app, f"#kb new\n\nPull the lever; notes go to {note}.\n")
    (draft,) = drafted(folder)
    assert note not in draft.path.read_text() and "-removed" in draft.body
