"""docs/models.md states the default quality threshold the shipped head really has, everywhere."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_models_md_gives_the_shipped_heads_threshold_and_no_other():
    threshold = json.loads((ROOT / "models" / "default_head" / "quality.json").read_text())["default_threshold"]
    page = (ROOT / "docs" / "models.md").read_text()
    stated = re.findall(r"(?:head's default|`default_threshold`) \((0\.\d+)\)", page)
    assert len(stated) >= 2, "docs/models.md no longer states the default threshold where this test looks"
    assert {float(x) for x in stated} == {threshold}, stated
