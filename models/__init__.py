"""Model code of Sieve: the sentence encoder, the small heads on its embeddings, HF reward models.

Everything here needs the ``models`` extra (torch, transformers, sentence-transformers).
This ``__init__`` imports nothing heavy, so ``import models`` is always cheap; import the
submodules (``models.encoder``, ``models.heads``, ``models.stage``...) where they are used.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_HEAD_DIR = Path(__file__).resolve().parent / "default_head"

__all__ = ["DEFAULT_HEAD_DIR"]
