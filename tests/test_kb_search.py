"""Knowledge-base search (issue 19): BM25 over stemmed words in the requester's language,
filtered by queue and audience, cut at kb.threshold; and `maildesk kb index|search|suggest`."""
from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from click.testing import CliRunner
from conftest import run_cli, settings_dict

from maildesk.cli.main import cli
from maildesk.kb.articles import Article
from maildesk.kb.search import Index
from maildesk.ml.words import detect, terms

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"


def article(slug: str, title: str, body: str, **more: object) -> Article:
    fields: dict = {"status": "published", "lang": "en", **more}
    return Article(slug=slug, path=Path(f"{slug}.md"), title=title, body=body, **fields)


ARTICLES = [
    article("printers", "Printers", "Add printers from the settings, follow-me queue."),
    article("vpn", "VPN connection fails", "Restart the VPN client; check the gateway.",
            queues=("network",)),
    article("vpn-agents", "Restarting the VPN gateway", "Fail over the VPN gateway first.",
            audience="agents"),
    article("vpn-draft", "VPN draft", "VPN VPN VPN gateway client", status="draft"),
    article("vpn-de", "VPN-Verbindung schlägt fehl", "Starten Sie den VPN-Client neu.",
            lang="de"),
    article("paper", "Paper jam", "Open the cover and pull the paper out.", lang="en"),
]


def slugs(hits: list) -> list[str]:
    return [h.article.slug for h in hits]


def test_stemming_finds_other_forms_of_a_word() -> None:
    assert terms("printer", "en") == terms("Printers", "en")
    assert terms("printing", "en") == terms("prints", "en")
    assert terms("printing", "en") != terms("printers", "en")     # Snowball keeps them apart
    assert terms("Drucker Verbindung", "de") == terms("Druckers Verbindungen", "de")
    assert slugs(Index(ARTICLES).search("our printer", "en")) == ["printers"]
    assert slugs(Index(ARTICLES).search("xyzzy", "en")) == []


def test_the_language_is_detected_and_its_articles_come_first() -> None:
    assert detect("Der Client startet nicht und ich kann mich nicht verbinden", ["de", "en"]) \
        == "de"
    assert detect("The client does not start and I cannot connect", ["de", "en"]) == "en"
    assert detect("VPN", ["de", "en"]) is None                    # no word tells
    assert detect("Der Client", ["en"]) is None                   # not among those held
    index = Index(ARTICLES)
    assert slugs(index.search("Mein VPN-Client geht nicht, bitte helfen Sie mir")) == \
        ["vpn-de"]
    assert slugs(index.search("My VPN client is not working, can you help me")) == ["vpn"]
    # a German mail on a subject with no German article gets the English one
    assert slugs(index.search("Der Drucker hat einen paper jam, bitte helfen")) == ["paper"]


def test_queue_audience_and_status_filter() -> None:
    index = Index(ARTICLES)
    assert "vpn" in slugs(index.search("VPN gateway", "en", queue="network"))
    assert "vpn" not in slugs(index.search("VPN gateway", "en", queue="billing"))
    assert "vpn" in slugs(index.search("VPN gateway", "en"))       # no queue: any
    for_customers = slugs(index.search("VPN gateway fail over", "en", limit=10))
    assert "vpn-agents" not in for_customers and "vpn-draft" not in for_customers
    assert slugs(index.search("VPN gateway fail over", "en", audience="agents")) == \
        ["vpn-agents"]
    assert len(index) == 5                                         # the draft is not held


def test_the_threshold_is_respected() -> None:
    index = Index(ARTICLES)
    hits = index.search("VPN client gateway", "en", limit=10)
    assert hits
    top = hits[0].score
    assert index.search("VPN client gateway", "en", threshold=top) == []
    assert all(h.score > top / 2
               for h in index.search("VPN client gateway", "en", threshold=top / 2))


def desk(tmp_path: Path, threshold: float = 0.0) -> Path:
    folder = tmp_path / "kb"
    folder.mkdir()
    for a in ARTICLES:
        (folder / f"{a.slug}.md").write_text(
            f"---\ntitle: {a.title}\nlang: {a.lang}\nstatus: {a.status}\n"
            f"audience: {a.audience}\nqueues: [{', '.join(a.queues)}]\n---\n{a.body}\n",
            encoding="utf-8")
    cfg = tmp_path / "maildesk.yaml"
    cfg.write_text(yaml.safe_dump(settings_dict(
        tmp_path, kb={"folder": "kb", "threshold": threshold},
        desk={"queues": [{"name": "network"}, {"name": "general"}]})))
    return cfg


def test_kb_index_and_search(tmp_path: Path) -> None:
    cfg = desk(tmp_path)
    r = run_cli("kb", "index", "--format", "json", config=cfg)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert (report["articles"], report["published"], report["languages"]) == \
        (6, 5, ["de", "en"]) and report["terms"] > 10
    assert b"6 articles, 5 published, languages de, en" in run_cli("kb", "index",
                                                                   config=cfg).stdout
    found = json.loads(run_cli("kb", "search", "printer", "problems", "--format", "json",
                               config=cfg).stdout)
    assert [h["slug"] for h in found] == ["printers"] and found[0]["above_threshold"]
    r = run_cli("kb", "search", "VPN", "gateway", "--queue", "general", "--lang", "en",
                config=cfg)
    assert r.returncode == 0 and b"vpn" not in r.stdout.replace(b"vpn-de", b"")
    r = run_cli("kb", "search", "nothing", "matches", "this", config=cfg)
    assert r.returncode == 0 and b"no article above the threshold (kb.threshold=0)" in r.stdout


def test_kb_search_all_shows_what_the_threshold_keeps_out(tmp_path: Path) -> None:
    cfg = desk(tmp_path, threshold=1000)
    r = run_cli("kb", "search", "printer", config=cfg)
    assert r.returncode == 0 and b"no article above the threshold (kb.threshold=1000)" \
        in r.stdout and b"printers" not in r.stdout
    r = run_cli("kb", "search", "printer", "--all", config=cfg)
    assert b"printers" in r.stdout and b"below threshold" in r.stdout
    rows = json.loads(run_cli("kb", "search", "printer", "--all", "--format", "json",
                              config=cfg).stdout)
    assert [(h["slug"], h["above_threshold"]) for h in rows] == [("printers", False)]


def test_kb_commands_on_a_desk_without_a_knowledge_base(tmp_path: Path) -> None:
    cfg = tmp_path / "maildesk.yaml"
    cfg.write_text(yaml.safe_dump(settings_dict(tmp_path)))
    r = run_cli("kb", "index", config=cfg)
    assert r.returncode == 0 and b"no kb.folder set" in r.stdout
    r = run_cli("kb", "search", "printer", config=cfg)
    assert r.returncode == 0 and b"no article above the threshold" in r.stdout
    mail = tmp_path / "m.eml"
    mail.write_bytes(b"From: a@example.com\nSubject: printer\n\nIt does not print.\n")
    assert json.loads(run_cli("kb", "suggest", str(mail), "--format", "json",
                              config=cfg).stdout) == []


def test_kb_suggest_reads_the_customer_words_only(tmp_path: Path) -> None:
    cfg = desk(tmp_path)
    mail = tmp_path / "m.eml"
    mail.write_bytes(b"From: a@example.com\nTo: desk@example.com\nSubject: Help\n\n"
                     b"My printers stopped printing.\n\nOn Monday, Bob <b@example.com> "
                     b"wrote:\n> The VPN gateway client is down, VPN VPN VPN\n")
    r = run_cli("kb", "suggest", str(mail), "--format", "json", config=cfg)
    assert r.returncode == 0, r.stderr
    assert [h["slug"] for h in json.loads(r.stdout)] == ["printers"]   # not the quoted VPN
    r = run_cli("kb", "suggest", str(tmp_path / "missing.eml"), config=cfg)
    assert r.returncode == 66 and r.stderr.count(b"\n") == 1 and b"missing.eml" in r.stderr
    r = run_cli("kb", "suggest", str(tmp_path), config=cfg)       # a folder is no mail
    assert r.returncode == 66 and b"Traceback" not in r.stderr


def test_kb_suggest_on_real_mail_never_crashes(tmp_path: Path) -> None:
    """50 corpus mails of many sources and charsets, in process (50 interpreters would
    take a minute): each is suggested for or said to have nothing, never a traceback."""
    rows = [line.split("\t") for line in
            (CORPUS / "INDEX.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    emls = sorted(r[0] for r in rows if r[0].endswith(".eml"))
    picked = emls[::max(1, len(emls) // 50)][:50]
    assert len(picked) == 50
    assert sum("charsets=utf-8" not in r[4] for r in rows if r[0] in picked) >= 10
    cfg = desk(tmp_path)
    outcomes = set()
    for path in picked:
        r = CliRunner().invoke(cli, ["--config", str(cfg), "kb", "suggest",
                                     str(CORPUS / path), "--format", "json"])
        assert r.exit_code in (0, 65) and r.exception is None or \
            isinstance(r.exception, SystemExit), (path, r.output, r.exception)
        if r.exit_code == 0:
            outcomes.add(bool(json.loads(r.stdout)))
    assert outcomes == {True, False}        # some get an article, some none


def test_help_everywhere() -> None:
    for command in ("index", "search", "suggest"):
        r = CliRunner().invoke(cli, ["kb", command, "--help"], env=dict(os.environ))
        assert r.exit_code == 0 and "--format" in r.output, command
