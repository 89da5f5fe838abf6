"""ruff over the whole repository, with the rules of pyproject.toml ([tool.ruff]): `make test` lints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, f"ruff check (fix with `ruff check --fix .`):\n{out.stdout}{out.stderr}"
