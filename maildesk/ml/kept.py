"""Sentence embeddings of texts that are asked for again and again, kept in a file: the
job that groups recurring incidents looks at a week of them every hour, and each should
cost the model once, not 168 times.

The file (an npz archive of plain arrays, written aside and renamed) holds the rows of
the keys asked for last, so it stays the size of the window, not of the desk's history.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .embeddings import Embedder

log = logging.getLogger("maildesk.ml")


def kept_rows(path: Path, keys: Sequence[int], texts: Sequence[str],
              embedder: Embedder) -> np.ndarray:
    """One embedding per key (of its text), those path holds read from it, the others
    computed; path then holds these keys' rows alone."""
    known: dict[int, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            known = dict(zip((int(k) for k in z["keys"]), z["rows"]))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError) as e:
        log.warning("%s: unreadable (%s); embedding again", path, e)
    new = [i for i, k in enumerate(keys) if k not in known]
    for i, row in zip(new, embedder.encode([texts[i] for i in new])):
        known[keys[i]] = row
    rows = np.stack([known[k] for k in keys]) if keys else \
        np.zeros((0, embedder.dimensions), dtype=np.float32)
    if new or len(known) != len(keys):
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.{os.getpid()}")
        with part.open("wb") as f:
            np.savez(f, keys=np.asarray(keys, dtype=np.int64), rows=rows)
        part.replace(path)
    return rows
