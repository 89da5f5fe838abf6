"""summary.json of file mode: reason x source, per input file, by kind, scores by kind and decision,
counted scores, the cuts; paths checked before any work; --limit; the line count of the progress bar."""

from __future__ import annotations

import gzip
import logging
import os
from collections import Counter
from pathlib import Path

import orjson
import pytest

from quality.filemode import (OUTPUT_FILES, PathProblem, Summary, check_inputs, count_records, curate,
                              prepare_out_dir, prepare_out_file)
from quality.registry import declared_scores

DATA = Path(__file__).parents[2] / "data"
PANDA = "WeOpenML/PandaLM:data/testset-v1.json"


@pytest.fixture
def run_inputs(tmp_path, mit_sample):
    """The MIT slice (SFT and hh-rlhf pairs, two exact copies); a second file whose rows all come from
    one source and whose prompts are benchmark items (all contaminated, as PandaLM's were); a row with
    two e-mail addresses; and the benchmark file."""
    gsm = [orjson.loads(line) for line in mit_sample.read_bytes().splitlines() if b'"gsm8k' in line][:4]
    bench = tmp_path / "bench.jsonl"
    bench.write_bytes(b"".join(orjson.dumps({"id": f"b{i}", "benchmark": "gsm8k_test", "text": r["instruction"]})
                               + b"\n" for i, r in enumerate(gsm)))
    panda = tmp_path / "panda.jsonl"
    rows = [{"id": f"panda-{i}", "source": PANDA, "instruction": r["instruction"], "output": r["output"] + " Done."}
            for i, r in enumerate(gsm)]
    rows.append({"id": "pii-1", "source": PANDA, "instruction": "Who do I write to about my order?",
                 "output": "Write to jane.roe@gmail.com or, for refunds, to refunds.desk@gmail.com."})
    panda.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return [mit_sample, panda], bench


def _envelopes(out: Path) -> list[dict]:
    return [orjson.loads(line) for name in OUTPUT_FILES.values() for line in (out / name).read_bytes().splitlines()]


def test_summary_tables_agree_with_the_envelopes(cheap_pipeline, tmp_path, run_inputs):
    inputs, bench = run_inputs
    out = tmp_path / "out"
    summary = curate(cheap_pipeline(**{"decontam.benchmark_paths": (str(bench),)}), inputs, out)
    envs = _envelopes(out)
    # reason x source: the deciding reason per source, as a script over the envelopes finds it
    expected = {}
    for e in envs:
        if e["reasons"]:
            expected.setdefault(e.get("source") or "unknown", Counter())[f"{e['decision']}:{e['reasons'][0]}"] += 1
    assert summary["reasons_by_source"] == {k: dict(v) for k, v in expected.items()}
    assert summary["reasons_by_source"][PANDA]["rejected:contaminated"] == 4
    assert summary["by_source"][PANDA] == {"rejected": 4, "accepted": 1}
    # per input file: every line of each file, by decision and reason
    files = summary["by_input_file"]
    assert list(files) == [str(p) for p in inputs]
    assert files[str(inputs[0])]["total"] == len(inputs[0].read_bytes().splitlines())
    assert files[str(inputs[1])] == {"total": 5, "decisions": {"rejected": 4, "accepted": 1},
                                     "reasons": {"rejected:contaminated": 4}}
    # by kind; scores by kind and decision: pair scores only on pairs, counts match the envelopes
    kinds = Counter(("preference" if "chosen" in e["example"] else "sft", e["decision"]) for e in envs)
    assert summary["by_kind"] == {k: {d: n for (k2, d), n in kinds.items() if k2 == k} for k, _ in kinds}
    by_kind = summary["scores_by_kind"]
    assert "length_bias" in by_kind["preference"] and "length_bias" not in by_kind["sft"]
    for kind, scores in by_kind.items():
        for name, dists in scores.items():
            carried = [e for e in envs if ("chosen" in e["example"]) == (kind == "preference") and name in e["scores"]]
            assert dists["all"]["count"] == len(carried)
            for decision in ("accepted", "rejected"):
                n = sum(1 for e in carried if e["decision"] == decision)
                assert (dists.get(decision) or {"count": 0})["count"] == n
    contamination = by_kind["sft"]["contamination"]
    assert contamination["rejected"]["max"] >= 0.8 > contamination["accepted"]["max"]  # split by decision
    # counted scores are summed, not distributed
    assert summary["score_counts"] == {"pii_email": {"examples": 1, "total": 2.0}}
    assert "pii_email" not in summary["scores"] and "pii_email" not in by_kind["sft"]
    # the cuts the run applied, for the report's lines
    assert summary["thresholds"] == {"contamination": 0.8, "near_jaccard": 0.8}
    assert "unchecked" not in summary
    assert orjson.loads((out / "summary.json").read_bytes())["reasons_by_source"] == summary["reasons_by_source"]


def test_every_score_on_real_output_is_declared(cheap_pipeline, tmp_path, run_inputs):
    inputs, bench = run_inputs
    curate(cheap_pipeline(**{"decontam.benchmark_paths": (str(bench),)}), inputs, tmp_path / "out")
    seen = {name for e in _envelopes(tmp_path / "out") for name in e["scores"]}
    declared = declared_scores()
    assert seen >= {"contamination", "near_jaccard", "length_bias", "pii_email"}
    assert seen <= set(declared), seen - set(declared)


def test_a_check_without_its_feature_is_reported_not_silent(tmp_path, mit_sample, caplog):
    """The gate and the margin check built without the model stage pass everything: the build warns,
    naming how to turn them on or off, and summary.json says so."""
    from quality.config import PipelineSettings, load
    from quality.registry import REGISTRY
    from streams.assemble import build_pipeline

    names = [n for n in REGISTRY.default_order() if n != "model_score"]
    settings = load(PipelineSettings, env={}, overrides={"semantic_dedup.enabled": False, "stages": names})
    with caplog.at_level(logging.WARNING, logger="quality.build"):
        pipeline = build_pipeline(settings)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "pair_margin needs reward_margin" in warned and "scoring.min_margin = none" in warned
    assert "quality_gate needs quality" in warned
    summary = curate(pipeline, [mit_sample], tmp_path / "out")
    assert set(summary["unchecked"]) == {"quality_gate", "pair_margin"}


def test_limit_decides_only_the_first_lines_across_files(cheap_pipeline, tmp_path, mit_sample):
    n = len(mit_sample.read_bytes().splitlines())
    summary = curate(cheap_pipeline(), [mit_sample, DATA / "hh_pair_structure.jsonl"], tmp_path / "out",
                     limit=n + 3, batch_size=10)
    assert summary["total"] == n + 3 and summary["limit"] == n + 3
    assert summary["by_input_file"][str(DATA / "hh_pair_structure.jsonl")]["total"] == 3
    assert len(_envelopes(tmp_path / "out")) == n + 3
    with pytest.raises(ValueError, match="limit must be > 0"):
        curate(cheap_pipeline(), [mit_sample], tmp_path / "out2", limit=0)


def test_count_records_counts_lines_cheaply(tmp_path):
    plain = tmp_path / "a.jsonl"
    plain.write_bytes(b"{}\n{}\n\n{}")  # no newline at the end; a blank line counts (the bar is an estimate)
    gz = tmp_path / "b.jsonl.gz"
    with gzip.open(gz, "wb") as fh:
        fh.write(b"{}\n" * 1000)
    assert count_records([plain]) == 4
    assert count_records([plain, gz]) == 1004
    assert count_records([plain, gz], limit=10) == 10


def test_paths_are_checked_with_messages_that_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="input file not found: .*nope.jsonl"):
        check_inputs([tmp_path / "nope.jsonl"])
    with pytest.raises(PathProblem, match="is a directory; give the JSONL files in it"):
        check_inputs([tmp_path])
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(PathProblem, match="is a file, not a directory"):
        prepare_out_dir(afile)
    with pytest.raises(PathProblem, match="is a directory: give a file name"):
        prepare_out_file(tmp_path)
    with pytest.raises(PathProblem, match="cannot write in"):
        prepare_out_dir(unwritable(tmp_path) / "out")
    prepare_out_dir(tmp_path / "new" / "out")  # created, and nothing left in it
    assert list((tmp_path / "new" / "out").iterdir()) == []
    # an output that is an input would be emptied before it is read: re-curating last run's accepted.jsonl
    (tmp_path / "new" / "out" / "accepted.jsonl").write_text("{}\n")
    with pytest.raises(PathProblem, match="would overwrite the input"):
        prepare_out_dir(tmp_path / "new" / "out", [afile, tmp_path / "new" / "out" / "accepted.jsonl"])
    with pytest.raises(PathProblem, match="would overwrite the input"):
        prepare_out_file(afile, [afile])
    # a pipe would be drained by the line count before the run reads it
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(PathProblem, match="not a regular file"):
        check_inputs([fifo])


def unwritable(tmp_path: Path) -> Path:
    """A directory this process cannot write in: read-only by mode, or (as root, whom modes do not stop)
    a path under /sys, which no one can create files in."""
    if os.geteuid() == 0:
        return Path("/sys/sieve-test-unwritable")
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    return d


def test_summary_series_keep_kinds_and_decisions_apart():
    from quality.envelope import Decision
    from quality.records import Example, Message

    s = Summary()
    sft = Example(id="a", kind="sft", format="alpaca",
                  messages=(Message("user", "q"), Message("assistant", "an answer")))
    pair = Example(id="p", kind="preference", format="trl", messages=(Message("user", "q"),),
                   chosen=(Message("assistant", "good"),), rejected=(Message("assistant", "bad"),))
    s.add(Decision("a", "accepted", [], {"quality": 0.5}, {"file": "f", "line": 1}, example=sft))
    s.add(Decision("p", "rejected", ["pair_low_margin"], {"quality": 0.9}, {"file": "f", "line": 2}, example=pair))
    assert s.series("quality", "sft") == [0.5] and s.series("quality", "preference", "rejected") == [0.9]
    series = s.report_series()
    assert {k: list(v) for k, v in series["scores"]["sft"]["quality"].items()} == {"accepted": [0.5]}
    assert {k: list(v) for k, v in series["lengths"]["preference"]["response_chars"].items()} == {"rejected": [4.0]}
