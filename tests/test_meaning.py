"""Recurring incidents and similar tickets by meaning (issue 20, `problems.embeddings`,
`similar.embeddings`, the extra maildesk[ml]): tickets compared by their sentence
embeddings instead of their words, each embedded once and kept; a desk that asks for it
without the extra is told in one line what to install. The tests that need the model
are skipped where torch and sentence-transformers are not installed (.ci/run installs
them)."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_problems import by_agent
from test_proposals import DESK, OTHERS, OUTAGE, arrive, proposals
from test_similar import T0, notified
from test_similar import arrive as arrive_at

from maildesk.app import App
from maildesk.desk import StartupError
from maildesk.ml import embeddings
from maildesk.scheduler.jobs import propose_problems

# the outage again, in an ERP's words
SAID_OTHERWISE = [
    ("ana@customer.test", "ERP down", "Our ERP system won't load, just a timeout."),
    ("cy@customer.test", "Can't reach the ERP", "Is the ERP offline? None of us can open it."),
    ("dee@customer.test", "ERP unavailable?", "Logging in to the ERP fails, service "
                                              "unavailable."),
    ("eli@customer.test", "urgent: ERP", "We can't work, the ERP application does not respond."),
    ("flo@customer.test", "ERP not loading", "Our ERP keeps loading forever and then errors.")]
# these five are 0.65 to 0.79 alike by meaning (all-MiniLM-L6-v2), the others below 0.2
MEANING = {"embeddings": True, "embedding_similarity": 0.6}


def test_incidents_alike_in_meaning_are_grouped_and_embedded_once(
        models: Path, make_app: Callable[..., App], db_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(db_url, desk=DESK, problems=MEANING)
    assert app.embedder is not None
    app.embedder.folder = models            # extracted once for the module
    arrive(app, SAID_OTHERWISE + OTHERS)
    now = datetime.now(timezone.utc) + timedelta(minutes=1)
    assert propose_problems(app, now) == "1 proposed"
    [p] = proposals(app)
    assert len(p.tickets) == 5
    kept = app.settings.data_dir / "embeddings" / "incidents.npz"
    with np.load(kept) as z:
        assert len(z["keys"]) == len(SAID_OTHERWISE + OTHERS)
    encoded: list[int] = []
    real = embeddings.Embedder.encode

    def counting(self: Any, texts: Any) -> Any:
        encoded.append(len(texts))
        return real(self, texts)
    monkeypatch.setattr(embeddings.Embedder, "encode", counting)
    arrive(app, OUTAGE[:1])
    propose_problems(app, now + timedelta(hours=1))
    assert encoded == [1], "only the new incident is embedded; the rest are kept"


def test_with_embeddings_their_similarity_decides_not_the_words(
        models: Path, make_app: Callable[..., App], db_url: str) -> None:
    """Alike in words (they all say ERP), not alike enough in meaning at 0.9: no group."""
    app = make_app(db_url, desk=DESK, problems=MEANING | {"embedding_similarity": 0.9})
    assert app.embedder is not None
    app.embedder.folder = models
    arrive(app, SAID_OTHERWISE + OTHERS)
    now = datetime.now(timezone.utc) + timedelta(minutes=1)
    assert propose_problems(app, now) == "no new group"
    words = make_app(db_url, desk=DESK)      # the same desk by words: one group
    assert propose_problems(words, now) == "1 proposed"


def test_embeddings_without_the_extra_is_one_line_saying_what_to_install(
        make_app: Callable[..., App], without_ml_extra: None) -> None:
    with pytest.raises(StartupError) as e:
        make_app(desk=DESK, problems={"embeddings": True})
    message = str(e.value)
    assert "\n" not in message and "problems.embeddings" in message
    assert "pip install torch==2.13.0" in message


def test_a_resolved_ticket_alike_in_meaning_is_named_and_its_embedding_kept(
        models: Path, make_app: Callable[..., App], db_url: str) -> None:
    app = make_app(db_url, desk=DESK, similar={"embeddings": True,
                                               "embedding_similarity": 0.6})
    assert app.similar.embedder is not None
    app.similar.embedder.folder = models
    arrive_at(app, "ana@customer.test", "Cannot print",
              "Nothing comes out of the printer next to the kitchen.", T0)
    by_agent(app, "MD-1", "#status resolved\nCleared the stuck print queue.")
    arrive_at(app, "cy@customer.test", "Nothing printed",   # 0.71 alike by meaning
              "I send my files to print but the printer by the kitchen stays silent.",
              T0 + timedelta(hours=1))
    said = notified(app, "MD-2")
    assert "MD-1  Cannot print" in said and "Cleared the stuck print queue." in said
    kept = app.settings.data_dir / "embeddings" / "resolved.npz"
    with np.load(kept) as z:
        assert len(z["keys"]) == 1
