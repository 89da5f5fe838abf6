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
    assert report["total"] == 10 and "quality" in report["scores"]
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
