"""`sieve demo` end to end: its own broker, a worker, the bundled sample; every line decided."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import orjson
import pytest
from stream_utils import ROOT

from streams.cli.demo import SAMPLE

pytestmark = pytest.mark.integration

#: Seconds the whole demo may take (broker start included; jars are cached by the session broker).
DEMO_TIMEOUT = 180.0


def test_demo_decides_every_sample_line(tmp_path, kafka):  # `kafka`: the jars are fetched and the JVM warm
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIEVE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "streams.cli", "demo", "--no-models", "--rate", "0",
                           "--out", str(out)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=DEMO_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "stopped: done; 270 of 270 sample lines decided" in proc.stdout
    envelopes = [orjson.loads(line) for name in ("accepted", "rejected", "dead_letter")
                 for line in (out / f"{name}.jsonl").read_bytes().splitlines()]
    lines = [x for x in SAMPLE.read_bytes().split(b"\n") if x.strip()]
    assert len(envelopes) == len(lines) == 270
    assert sorted(e["origin"]["offset"] for e in envelopes) == list(range(270))
    first = Counter(e["reasons"][0] for e in envelopes if e["reasons"])
    for reason in ("invalid_json", "not_an_object", "schema_error", "unknown_format", "invalid_utf8"):
        assert first[reason] == 2, (reason, first)
    assert first["refusal"] == 2 and first["empty_response"] == 1 and first["duplicate_exact"] == 12
    assert "stopped after" in (out / "worker.log").read_text()
