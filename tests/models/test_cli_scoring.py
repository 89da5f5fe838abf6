"""`sieve score` and `sieve train-scorer` end to end, real MiniLM on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from streams.cli import main

pytestmark = pytest.mark.models

DATA = Path(__file__).parents[1] / "data"


def test_score_annotates_every_line_and_drops_nothing(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    rows = (DATA / "hh_pair_structure.jsonl").read_bytes().splitlines()[:5]
    sft = [orjson.dumps({"id": f"s{i}", "instruction": f"Add {i} and {i}.", "output": f"{i} + {i} = {2 * i}."})
           for i in range(1, 4)]
    src.write_bytes(b"\n".join(rows + sft + [sft[0], b"{not json"]) + b"\n")
    out = tmp_path / "scored.jsonl"
    assert main(["score", str(src), "--out", str(out), "--no-progress"]) == 0
    envs = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(envs) == 10
    assert envs[-1]["decision"] == "dead_letter" and envs[-1]["reasons"] == ["invalid_json"]
    for env in envs[:9]:
        assert "quality" in env["scores"], env["id"]
        assert "model_score" in env["versions"]["stages"]
    pairs = envs[:5]
    assert all({"reward_chosen", "reward_rejected", "reward_margin", "length_bias"} <= set(e["scores"]) for e in pairs)
    assert pairs[0]["reasons"][0] == "pair_identical"  # what curate would say, but nothing is dropped
    assert "reward" in envs[5]["scores"]
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == 10 and "quality" in report["scores_by_kind"]["sft"]
    assert (tmp_path / "scored.jsonl.summary.json").is_file()


def test_score_usage_errors(tmp_path, capsys):
    assert main(["score", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def _labelled(tmp_path):
    """20 hand-made SFT examples: correct answers labelled good, off-topic ones bad."""
    data, labels = tmp_path / "sft.jsonl", tmp_path / "labels.jsonl"
    rows, labs = [], []
    for i in range(20):
        good = i % 2 == 0
        out = f"{i} plus {i} equals {2 * i}." if good else "I once saw a heron near the lake at dawn."
        rows.append({"id": f"e{i}", "instruction": f"What is {i} plus {i}?", "output": out})
        labs.append({"id": f"e{i}", "good": good})
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    labels.write_text("\n".join(json.dumps(r) for r in labs) + "\n")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps({"id": f"p{i}", "prompt": f"What is {i} times 2?",
                                           "chosen": f"It is {2 * i}.",
                                           "rejected": "Herons are wading birds."}) for i in range(12)) + "\n")
    return data, labels, pairs


def test_train_scorer_writes_reproducible_heads_and_a_card(tmp_path, capsys):
    data, labels, pairs = _labelled(tmp_path)
    args = ["train-scorer", "--quality-data", str(data), "--quality-labels", str(labels), "--label-key", "good",
            "--pairs", str(pairs), "--folds", "2", "--device", "cpu", "--no-progress", "--cache", str(tmp_path / "c")]
    assert main([*args, "--out", str(tmp_path / "h1")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["quality"]["cv_auroc"] > 0.9 and report["reward"]["cv_accuracy_all"] > 0.9
    assert main([*args, "--out", str(tmp_path / "h2")]) == 0  # second run: embeddings from the cache
    for name in ("quality", "reward"):
        a = json.loads((tmp_path / "h1" / f"{name}.json").read_text())
        b = json.loads((tmp_path / "h2" / f"{name}.json").read_text())
        assert a["sha256"] == b["sha256"]
    card = (tmp_path / "h1" / "MODEL_CARD.md").read_text()
    assert "sft.jsonl" in card and "pairs.jsonl" in card and "cv_auroc" in card


def test_train_scorer_usage_errors(tmp_path, capsys):
    assert main(["train-scorer", "--out", str(tmp_path)]) == 2
    assert "nothing to train" in capsys.readouterr().err
    assert main(["train-scorer", "--out", str(tmp_path), "--quality-data", "x.jsonl"]) == 2
    assert "--quality-labels" in capsys.readouterr().err


ROOT = Path(__file__).resolve().parents[2]
#: Seconds one `sieve` subprocess with the model may take (load, then ~130 rows on 2 busy cores).
MODEL_CLI_TIMEOUT = 600
MODEL_SCORES = {"quality", "reward", "reward_chosen", "reward_rejected", "reward_margin", "semantic_similarity"}


def _sieve(*args: str, env: dict[str, str] | None = None):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=MODEL_CLI_TIMEOUT)


def test_score_with_the_model_is_independent_of_batch_size(tmp_path):
    """Toolformer rows (near duplicates), the MIT slice (pairs, exact copies), and three Toolformer rows
    again, reworded by one word each: semantic and near dedup both act. Decisions, reasons, details and
    every non-model score are identical across batch sizes; model scores agree to float32 noise."""
    head = (DATA / "toolformer_head.jsonl").read_bytes().splitlines()[:60]
    again = [orjson.dumps({**(r := orjson.loads(line)), "id": r["id"] + "-again",
                           "output": r["output"].replace("(", " ( ", 1)}) for line in head[:3]]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(head + (DATA / "mit_sample.jsonl").read_bytes().splitlines() + again) + b"\n")
    runs = {}
    for size in (1, 7, 50, 256):
        out = tmp_path / f"s{size}.jsonl"
        done = _sieve("score", str(src), "--out", str(out), "--batch-size", str(size), "--no-progress")
        assert done.returncode == 0, done.stderr
        runs[size] = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    first = runs[1]
    assert sum("duplicate_semantic" in e["reasons"] for e in first) >= 3
    assert sum("duplicate_near" in e["reasons"] for e in first) >= 5
    for size, envs in runs.items():
        assert len(envs) == len(first) == 130
        for a, b in zip(first, envs):
            assert (a["id"], a["decision"], a["reasons"], a.get("details")) == \
                (b["id"], b["decision"], b["reasons"], b.get("details")), size
            assert set(a["scores"]) == set(b["scores"])
            for name, value in a["scores"].items():
                if name in MODEL_SCORES:
                    tolerance = 2e-4 if name == "semantic_similarity" else 2e-5  # 4 and 6 decimals printed
                    assert abs(value - b["scores"][name]) <= tolerance, (size, a["id"], name, value, b["scores"][name])
                else:
                    assert value == b["scores"][name], (size, a["id"], name)


def test_score_names_and_cuts_on_real_output_with_the_model(tmp_path):
    """Every score the real pipeline writes is declared (docs/scores.md, `sieve score --help`); the cuts
    in the summary are the head's calibrated threshold and the margin; quality is reported per kind."""
    from models import DEFAULT_HEAD_DIR
    from quality.registry import declared_scores

    bench = tmp_path / "bench.jsonl"
    gsm = next(orjson.loads(line) for line in (DATA / "mit_sample.jsonl").read_bytes().splitlines()
               if b'"gsm8k' in line)
    bench.write_bytes(orjson.dumps({"id": "b1", "text": gsm["instruction"]}) + b"\n")
    src = tmp_path / "in.jsonl"
    pii = orjson.dumps({"id": "pii", "instruction": "Who handles refunds?",
                        "output": "Write to refunds.desk@gmail.com and call +1 415 555 2671 if it is urgent."})
    src.write_bytes((DATA / "mit_sample.jsonl").read_bytes() + pii + b"\n")
    out = tmp_path / "scored.jsonl"
    done = _sieve("score", str(src), "--out", str(out), "--no-progress",
                  env={"SIEVE_PIPELINE__DECONTAM__BENCHMARK_PATHS": str(bench)})
    assert done.returncode == 0, done.stderr
    envs = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    seen = {name for e in envs for name in e["scores"]}
    assert seen >= MODEL_SCORES | {"near_jaccard", "contamination", "length_bias", "pii_email", "pii_phone"}
    assert seen <= set(declared_scores()), seen - set(declared_scores())
    help_text = _sieve("score", "--help").stdout
    assert all(f"  {name} " in help_text for name in seen)
    printed = json.loads(done.stdout)
    threshold = json.loads((DEFAULT_HEAD_DIR / "quality.json").read_text())["default_threshold"]
    assert printed["thresholds"]["quality"] == threshold and printed["thresholds"]["reward_margin"] == -0.5
    by_kind = printed["scores_by_kind"]
    assert by_kind["sft"]["quality"]["count"] == sum(1 for e in envs if "messages" in (e["example"] or {}))
    assert by_kind["preference"]["quality"]["count"] == 15  # the pairs' quality, apart from SFT's
    assert "reward" not in by_kind["preference"] and "reward_margin" not in by_kind["sft"]
    assert printed["score_counts"] == {"pii_email": {"examples": 1, "total": 1.0},
                                       "pii_phone": {"examples": 1, "total": 1.0}}


def test_train_scorer_warns_about_a_missing_reward_head_and_pipelines_say_so_too(tmp_path, capsys):
    """Only a quality head: the pair-margin check would vanish. train-scorer says so before encoding,
    in its JSON and in the card (which describes this run, not the shipped heads); a pipeline built on
    the folder warns, and curate's summary.json names the unchecked stage."""
    data, labels, _ = _labelled(tmp_path)
    folder = tmp_path / "heads"
    assert main(["train-scorer", "--quality-data", str(data), "--quality-labels", str(labels), "--label-key", "good",
                 "--folds", "2", "--device", "cpu", "--no-progress", "--out", str(folder)]) == 0
    captured = capsys.readouterr()
    assert "warning: no reward head" in captured.err and "scoring.min_margin = none" in captured.err
    report = json.loads(captured.out)
    assert len(report["warnings"]) == 1 and "pair-margin check" in report["warnings"][0]
    card = (folder / "MODEL_CARD.md").read_text()
    assert "Sieve default heads" not in card and "## Warnings" in card and "no reward head" in card
    assert "## `quality` (quality, linear)" in card and "## `reward`" not in card
    for fact in ("Trained 20", "UTC", "feature set: `seg-v2`", "all-MiniLM-L6-v2", "trained on 20 labelled examples",
                 "threshold: ", "sft.jsonl", "cv_auroc", "sieve train-scorer"):
        assert fact in card, fact
    pairs = tmp_path / "pairs_in.jsonl"
    pairs.write_bytes(b"\n".join((DATA / "hh_pair_structure.jsonl").read_bytes().splitlines()[-6:]) + b"\n")
    env = {"SIEVE_PIPELINE__SCORING__HEAD_DIR": str(folder), "SIEVE_PIPELINE__SEMANTIC_DEDUP__ENABLED": "false"}
    done = _sieve("curate", str(pairs), "--out", str(tmp_path / "out"), "--no-progress", "--no-report", env=env)
    assert done.returncode == 0, done.stderr
    assert "stage pair_margin needs reward_margin" in done.stderr and "scoring.min_margin = none" in done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(summary["unchecked"]) == {"pair_margin"}


def test_missing_heads_follows_the_settings(tmp_path):
    """No reward head matters only while a margin check needs one: not with min_margin = none, nor
    with a reward model; a folder without a quality head cannot be loaded at all."""
    from models.train import missing_heads

    (tmp_path / "quality.json").write_text("{}")
    assert len(missing_heads(tmp_path)) == 1 and "pair-margin check (scoring.min_margin = -0.5)" in \
        missing_heads(tmp_path)[0]
    assert missing_heads(tmp_path, min_margin=None) == []
    assert missing_heads(tmp_path, reward_model="/models/rm") == []
    (tmp_path / "quality.json").unlink()
    (tmp_path / "reward.json").write_text("{}")
    (warning,) = missing_heads(tmp_path)
    assert "no quality head" in warning and "--quality-data" in warning
