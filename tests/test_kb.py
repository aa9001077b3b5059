"""Knowledge-base articles (issue 19, first slice): files with front matter, checked and
listed by `maildesk kb`, every problem at its FILE:LINE:COL."""
from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import run_cli, settings_dict

GOOD = """---
title: Reset your VPN password
tags: [vpn, password]
queues: [network]
audience: customers
lang: en
status: published
owner: bob
review_by: 2020-01-31
---
Open the reset page and follow the steps.
"""


def desk(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "kb"
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    cfg = tmp_path / "maildesk.yaml"
    cfg.write_text(yaml.safe_dump(settings_dict(
        tmp_path, kb={"folder": "kb"},
        desk={"queues": [{"name": "network"}, {"name": "general"}]})))
    return cfg


def test_articles_are_listed_and_shown(tmp_path: Path) -> None:
    cfg = desk(tmp_path, {"reset-vpn-password.md": GOOD,
                          "how/printer.md": "---\ntitle: Printer jams\n---\nOpen tray 2.\n"})
    r = run_cli("kb", "check", config=cfg)
    assert r.returncode == 0 and b"ok (2 articles, 1 published)" in r.stdout, r.stderr
    rows = json.loads(run_cli("kb", "list", "--format", "json", config=cfg).stdout)
    assert [(a["slug"], a["status"], a["queues"]) for a in rows] == [
        ("printer", "draft", []), ("reset-vpn-password", "published", ["network"])]
    assert b"overdue" in run_cli("kb", "list", config=cfg).stdout
    shown = json.loads(run_cli("kb", "show", "reset-vpn-password", "--format", "json",
                               config=cfg).stdout)
    assert shown["body"] == "Open the reset page and follow the steps."
    assert shown["review_by"] == "2020-01-31" and shown["owner"] == "bob"
    assert run_cli("kb", "show", "no-such", config=cfg).returncode == 66


def test_every_problem_is_named_at_its_place(tmp_path: Path) -> None:
    bad = GOOD.replace("audience: customers", "audience: everyone") \
        .replace("queues: [network]", "queues: [netwrk]") \
        .replace("lang: en", "lang: English\ncolour: blue")
    cfg = desk(tmp_path, {
        "bad.md": bad,
        "Bad Name.md": GOOD,
        "no-fence.md": "title: x\n",
        "broken.md": "---\ntitle: [unclosed\n---\ntext\n",
        "empty.md": "---\ntitle: Nothing here\n---\n\n",
        "latin1.md": "---\ntitle: Caf\xe9\n---\nx\n".encode("latin-1").decode("latin-1"),
        "sub/bad.md": GOOD,
    })
    (tmp_path / "kb" / "latin1.md").write_bytes(b"---\ntitle: Caf\xe9\n---\nx\n")
    r = run_cli("kb", "check", config=cfg)
    assert r.returncode == 78
    err = r.stderr.decode()
    folder = tmp_path / "kb"
    for line in (f"{folder}/bad.md:4:1: queues: no queue netwrk (queues: general, network)",
                 f"{folder}/bad.md:5:1: audience: 'everyone' is not one of customers, agents",
                 f"{folder}/bad.md:6:1: lang: 'English' is no language tag",
                 f"{folder}/bad.md:7:1: unknown field 'colour'",
                 f"{folder}/Bad Name.md:1:1: file name 'Bad Name.md'",
                 f"{folder}/no-fence.md:1:1: an article starts with front matter",
                 f"{folder}/broken.md:3:1: YAML syntax error",
                 f"{folder}/empty.md:4:1: the article has no text",
                 f"{folder}/latin1.md:1:1: not UTF-8 text",
                 f"{folder}/sub/bad.md:1:1: slug 'bad' is also"):
        assert line in err, f"{line!r} not in:\n{err}"
    assert "Traceback" not in err
    assert run_cli("kb", "list", config=cfg).returncode == 78     # nothing partial is used


def test_a_desk_without_a_knowledge_base(tmp_path: Path) -> None:
    cfg = tmp_path / "maildesk.yaml"
    cfg.write_text(yaml.safe_dump(settings_dict(tmp_path)))
    r = run_cli("kb", "check", config=cfg)
    assert r.returncode == 0 and b"no kb.folder set" in r.stdout
    assert json.loads(run_cli("kb", "list", "--format", "json", config=cfg).stdout) == []
    missing = tmp_path / "m.yaml"
    missing.write_text(yaml.safe_dump(settings_dict(tmp_path, kb={"folder": "nowhere"})))
    r = run_cli("kb", "check", config=missing)
    assert r.returncode == 78 and b"nowhere: no such folder (kb.folder)" in r.stderr


def test_a_broken_article_is_named_and_keeps_nothing_else_from_working(tmp_path: Path) -> None:
    """An impossible date (read by YAML as a date, it fails later than syntax) and a
    file too big for mail are named at their place; a desk with a broken article still
    takes mail in and answers every other command, and `config check` names the article."""
    cfg = desk(tmp_path, {"reset-vpn-password.md": GOOD,
                          "bad-date.md": GOOD.replace("2020-01-31", "2027-13-45"),
                          "huge.md": GOOD + "word " * 30_000})
    r = run_cli("kb", "check", config=cfg)
    assert r.returncode == 78 and b"Traceback" not in r.stderr
    assert f"{tmp_path / 'kb' / 'bad-date.md'}:9:12: no such date".encode() in r.stderr
    assert b"huge.md:1:1: " in r.stderr and b"KiB" in r.stderr
    checked = run_cli("config", "check", config=cfg)
    assert checked.returncode == 78 and b"bad-date.md" in checked.stderr
    raw = (b"From: ana@customer.test\nTo: support@localhost\nSubject: vpn\n"
           b"Message-ID: <b1@customer.test>\n\nThe vpn password is refused.\n")
    piped = run_cli("ingest", input=raw, config=cfg)
    assert piped.returncode == 0, piped.stderr
    assert b"knowledge base not loaded" in piped.stderr and b"Traceback" not in piped.stderr
    listed = run_cli("tickets", "list", "--format", "json", config=cfg)
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["ref"] == "MD-1"


def test_kb_suggest_offers_what_the_queue_offers(tmp_path: Path) -> None:
    cfg = desk(tmp_path, {"reset-vpn-password.md": GOOD.replace("status: published\n", "")
                          .replace("lang: en\n", "lang: en\nstatus: published\n")})
    data = yaml.safe_load(cfg.read_text())
    data["kb"]["threshold"] = 0.1
    data["desk"]["addresses"] = ["support@localhost", "net@localhost", "quiet@localhost"]
    data["desk"]["queues"] = [{"name": "general"}, {"name": "network",
                                                    "addresses": ["net@localhost"]},
                              {"name": "quiet", "addresses": ["quiet@localhost"],
                               "suggest_articles": 0}]
    cfg.write_text(yaml.safe_dump(data))
    for to, found in (("net@localhost", True), ("support@localhost", False),
                      ("quiet@localhost", False)):
        eml = tmp_path / f"{to}.eml"
        eml.write_bytes(f"From: ana@customer.test\nTo: {to}\nSubject: VPN password\n\n"
                        "My vpn password is refused, how do I reset it?\n".encode())
        r = run_cli("kb", "suggest", str(eml), "--format", "json", config=cfg)
        assert r.returncode == 0, r.stderr
        assert bool(json.loads(r.stdout)) is found, (to, r.stdout)
    quiet = run_cli("kb", "suggest", str(tmp_path / "quiet@localhost.eml"), config=cfg)
    assert b"queue quiet offers no articles" in quiet.stdout
