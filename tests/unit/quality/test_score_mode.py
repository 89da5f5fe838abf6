"""Score mode (`sieve score`'s core): every stage on every record, duplicates judged against every
earlier record one at a time, so nothing depends on how the input is cut into batches."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from quality.filemode import annotate
from quality.records import RawRecord

DATA = Path(__file__).parents[2] / "data"
SIZES = (1, 7, 50, 256)


def _score_pipeline(cheap_pipeline, **overrides):
    """The cheap pipeline (no model stages) in score mode."""
    from quality.config import PipelineSettings, load
    from streams.assemble import build_pipeline

    settings = load(PipelineSettings, env={},
                    overrides={"scoring.enabled": False, "semantic_dedup.enabled": False, **overrides})
    return build_pipeline(settings, score_mode=True)


@pytest.fixture
def real_rows_with_duplicates(tmp_path) -> Path:
    """150 Toolformer rows (dense in near duplicates), the MIT slice (SFT and hh-rlhf pairs, with two
    exact copies), and the first Toolformer rows again at the end: exact copies across files."""
    src = tmp_path / "in.jsonl"
    head = (DATA / "toolformer_head.jsonl").read_bytes().splitlines()
    src.write_bytes(b"\n".join(head + (DATA / "mit_sample.jsonl").read_bytes().splitlines() + head[:5]) + b"\n")
    return src


def _envelopes(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_score_output_is_identical_for_batch_sizes_1_7_50_256(cheap_pipeline, tmp_path, real_rows_with_duplicates):
    outputs = {}
    for size in SIZES:
        out = tmp_path / f"scored{size}.jsonl"
        summary, _ = annotate(_score_pipeline(cheap_pipeline), [real_rows_with_duplicates], out, batch_size=size)
        outputs[size] = out.read_bytes()
        assert summary["total"] == 222
    assert outputs[1] == outputs[7] == outputs[50] == outputs[256]
    envs = _envelopes(tmp_path / "scored1.jsonl")
    reasons = Counter(r for e in envs for r in e["reasons"])
    # the input really has duplicates, so the test can fail: exact copies (the MIT slice's two, the
    # five Toolformer rows again) and many near ones
    assert reasons["duplicate_exact"] >= 7 and reasons["duplicate_near"] >= 20, reasons
    again = envs[-5:]
    assert all("duplicate_exact" in e["reasons"] for e in again)
    assert [e["details"]["exact_dedup"] for e in again] == [e["id"] for e in envs[:5]]


def test_a_record_is_judged_against_every_earlier_record_not_only_accepted_ones(cheap_pipeline):
    """X is rejected as a refusal; X2, its copy, is still a duplicate of it in score mode (curate, which
    compares with accepted examples only, would accept X2). B2 is a near copy of B1, itself a near copy of
    A: B2 is compared with B1 even though B1 is a duplicate, in one batch as one at a time."""
    base = ("Write a short story about a lighthouse keeper who finds a message in a bottle and how it changes "
            "his quiet life on the rocky island far from the coast")
    refusal = "As an AI language model, I cannot tell you what colour the sky is."
    rows = [{"id": "X", "instruction": "Name a colour of the sky on a clear day.", "output": refusal},
            {"id": "X2", "instruction": "Name a colour of the sky on a clear day.", "output": refusal},
            {"id": "A", "instruction": base, "output": "Once upon a time a keeper found a bottle on the shore."},
            {"id": "B1", "instruction": base.replace("quiet", "calm"),
             "output": "Once upon a time a keeper found a bottle on the shore."},
            {"id": "B2", "instruction": base.replace("quiet", "calm").replace("rocky", "stony"),
             "output": "Once upon a time a keeper found a bottle on the shore today."}]
    raws = [RawRecord(orjson.dumps(r), {"file": "t", "line": i + 1}) for i, r in enumerate(rows)]
    together = _score_pipeline(cheap_pipeline).process(raws)
    one_by_one = [d for p in [_score_pipeline(cheap_pipeline)] for raw in raws for d in p.process([raw])]
    for a, b in zip(together, one_by_one):
        assert (a.reasons, a.scores, a.details) == (b.reasons, b.scores, b.details)
    by_id = {d.id: d for d in together}
    assert by_id["X"].reasons == ["refusal"]
    assert by_id["X2"].reasons[:2] == ["refusal", "duplicate_exact"] and by_id["X2"].details["exact_dedup"] == "X"
    assert by_id["B1"].details["near_dedup"] == "A" and "duplicate_near" in by_id["B1"].reasons
    assert by_id["B2"].details["near_dedup"] == "B1"  # its most similar earlier record, itself a duplicate
    assert "duplicate_near" in by_id["B2"].reasons


def test_score_mode_applies_the_dedup_window_like_curate(cheap_pipeline):
    """With pipeline.dedup_window_s, records older than the window stop counting in score mode too."""
    row = {"instruction": "Explain why the sky is blue in two sentences.",
           "output": "Sunlight scatters off air molecules. Blue light scatters most, so the sky looks blue."}
    raws = [RawRecord(orjson.dumps({**row, "id": f"r{i}"}), {"topic": "t", "partition": 0, "offset": i,
                                                            "timestamp": t})
            for i, t in enumerate((1_000_000.0, 1_000_010.0, 1_010_000.0))]
    for size in (1, 3):
        p = _score_pipeline(cheap_pipeline, dedup_window_s=3600)
        out = [d for i in range(0, 3, size) for d in p.process(raws[i:i + size])]
        assert [d.reasons for d in out] == [[], ["duplicate_exact", "duplicate_near"], []]
