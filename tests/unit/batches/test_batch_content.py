"""A batch of converted hh-rlhf transcripts: its turn statistics count real turns; PII as counts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import orjson

from batches.assembler import BatchAssembler
from batches.manifest import lengths_of
from quality.filemode import curate, distribution

DATA = Path(__file__).resolve().parents[2] / "data"


def test_turn_statistics_and_pii_counts_of_a_batch_of_transcripts(tmp_path, cheap_pipeline):
    rows = [orjson.loads(line) for line in (DATA / "transcripts_sample.jsonl").read_bytes().splitlines()]
    extra = {"id": "pii-1", "prompt": "\n\nHuman: My mail is ann.lee@gmail.com, ping 8.8.8.8 for me\n\nAssistant:",
             "chosen": "Done: 8.8.8.8 answered, and I will write to you at ann.lee@gmail.com.",
             "rejected": "No."}
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps(r) for r in rows + [extra]) + b"\n")
    curate(cheap_pipeline(), [src], tmp_path / "out")
    accepted = [json.loads(line) for line in (tmp_path / "out" / "accepted.jsonl").read_text().splitlines()]
    converted = [e for e in accepted if e.get("converted")]
    assert len(converted) >= 5 and "pii-1" in {e["id"] for e in converted}

    # what the turns must be, from the raw text: every marker after a blank line, less the empty slot
    raw_prompts = {r["id"]: r["prompt"] for r in rows + [extra]}
    expected = []
    for env in accepted:
        markers = re.findall(r"(?:^|\n\n)(?:Human|Assistant):", raw_prompts[env["id"]])
        turns = (len(markers) - 1 + 1) if env.get("converted") else 2  # prompt turns + the response
        expected.append(turns)
        assert lengths_of(env["example"])["turns"] == turns, env["id"]

    a = BatchAssembler(tmp_path / "batches", max_examples=0, max_age_s=0, report=True)
    a.feed(accepted)
    manifest = a.close("request")
    assert manifest["stats"]["lengths"]["turns"] == distribution(expected)
    assert manifest["stats"]["lengths"]["turns"]["max"] > 2  # before conversion, every pair counted 2
    assert manifest["stats"]["transcripts_converted"] == {"anthropic": len(converted)}
    # PII: counts by kind, never a score distribution; the reserved 8.8.8.8 is not counted
    scores = {e["id"]: e["scores"] for e in accepted}
    assert scores["pii-1"]["pii_email"] == 2 and "pii_ip_address" not in scores["pii-1"]
    emails = int(sum(s.get("pii_email", 0) for s in scores.values()))
    with_pii = sum(any(k.startswith("pii_") for k in s) for s in scores.values())
    assert manifest["stats"]["pii_redactions"] == {"examples": with_pii, "by_kind": {"email": emails}}
    assert not any(name.startswith("pii_") for name in manifest["stats"]["scores"])
    report = (Path(manifest["location"]["dir"]) / "report.html").read_text()
    assert manifest["stats"]["score_counts"]["pii_email"] == {"examples": with_pii, "total": emails}
    assert f"pii_email (counted)</td><td>{emails} in {with_pii} example(s)" in report
    assert f"transcripts split into turns</td><td>anthropic: {len(converted)}" in report
    shards = [Path(f["local_path"]) for f in manifest["files"] if f["format"] == "json"]
    rows = [json.loads(line) for shard in shards for line in shard.read_text().splitlines()]
    assert len(rows) == len(accepted) and "ann.lee" not in json.dumps(rows)
    for row in rows:  # a converted prompt holds no markers; the quoted dialogue LLMBar asks to continue does
        # (hh_helpful_base_test-0444's assistant turn starts with "Human:", as hh-rlhf has it: not a marker)
        markers = any(re.search(r"\n\n(?:Human|Assistant):", m["content"]) for m in row["prompt"])
        assert markers == (row["id"] == "llmbar_processed_llmeval2-123"), row["id"]
