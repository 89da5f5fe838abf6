"""Heads: training, saving and loading; and the shipped default heads on real text."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models import DEFAULT_HEAD_DIR
from models.heads import FEATURE_SET, Head, TrainConfig, features, load_head, train_quality_head, train_reward_head
from models.metrics import auroc, pairwise_accuracy

pytestmark = pytest.mark.models


def _toy(n: int = 200, dim: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=n) > 1.0).astype(np.float32)
    return x, y


def test_quality_head_learns_and_round_trips(tmp_path):
    x, y = _toy()
    head = train_quality_head(x, y, TrainConfig(l2=0.01))
    scores = head.score(x)
    assert scores.min() >= 0 and scores.max() <= 1
    assert auroc(y, scores) > 0.95
    head.meta["default_threshold"] = 0.5
    path = head.save(tmp_path, "quality")
    assert path.suffix == ".safetensors"
    loaded = load_head(tmp_path, "quality")
    np.testing.assert_allclose(loaded.score(x), scores, atol=1e-6)
    assert loaded.meta["default_threshold"] == 0.5 and loaded.version()["sha256"] == head.meta["sha256"]


def test_training_is_reproducible(tmp_path):
    x, y = _toy()
    a = train_quality_head(x, y, TrainConfig(arch="mlp", hidden=8, l2=0.1, epochs=50, seed=3))
    b = train_quality_head(x, y, TrainConfig(arch="mlp", hidden=8, l2=0.1, epochs=50, seed=3))
    np.testing.assert_array_equal(a.logits(x), b.logits(x))


def test_reward_head_learns_a_preference_direction():
    rng = np.random.default_rng(1)
    xc = rng.normal(size=(300, 8)).astype(np.float32)
    xr = rng.normal(size=(300, 8)).astype(np.float32)
    swap = xc[:, 2] < xr[:, 2]  # the preferred side has the larger feature 2
    xc[swap], xr[swap] = xr[swap].copy(), xc[swap].copy()
    head = train_reward_head(xc, xr, TrainConfig(l2=0.01))
    assert pairwise_accuracy(head.score(xc), head.score(xr)) > 0.95
    assert float(head.weights["b"][0]) == 0.0


def test_bad_training_input_is_named():
    x, y = _toy()
    with pytest.raises(ValueError, match="both classes"):
        train_quality_head(x, np.zeros_like(y))
    with pytest.raises(ValueError, match="x_chosen"):
        train_reward_head(x[:5], x[:4])
    with pytest.raises(ValueError, match="arch"):
        TrainConfig(arch="transformer")


def test_load_head_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-scorer"):
        load_head(tmp_path, "quality")
    x, y = _toy()
    train_quality_head(x, y).save(tmp_path, "quality")
    meta = json.loads((tmp_path / "quality.json").read_text())
    (tmp_path / "quality.json").write_text(json.dumps({**meta, "features": "seg-v0"}))
    with pytest.raises(ValueError, match="seg-v0"):
        load_head(tmp_path, "quality")


def test_shipped_default_heads_are_complete():
    q, r = load_head(DEFAULT_HEAD_DIR, "quality"), load_head(DEFAULT_HEAD_DIR, "reward")
    assert (q.kind, r.kind) == ("quality", "reward")
    assert q.meta["features"] == r.meta["features"] == FEATURE_SET
    assert 0 < q.meta["default_threshold"] < 1
    assert q.meta["metrics"]["cv_auroc"] > 0.55
    assert (DEFAULT_HEAD_DIR / "MODEL_CARD.md").read_text().count("sha256") >= 4
    for name in ("quality", "reward"):
        assert (DEFAULT_HEAD_DIR / f"{name}.safetensors").stat().st_size < 2_000_000
    assert isinstance(q, Head)


def test_default_heads_on_real_text(encoder):
    """Behaviour of the shipped quality head: a prompt's own answer beats answers to other prompts."""
    q, r = load_head(DEFAULT_HEAD_DIR, "quality"), load_head(DEFAULT_HEAD_DIR, "reward")
    prompts = ["Classify the sentiment of this review as positive or negative.\n\nThe food was cold and the "
               "waiter was rude.", "Convert 5 kilometres to metres.", "Name the capital of France.",
               "Rewrite the sentence in the passive voice.\n\nThe cat chased the mouse.",
               "List three primary colours.", "Translate 'good morning' into Spanish."]
    good = ["Negative.", "5 kilometres is 5,000 metres.", "The capital of France is Paris.",
            "The mouse was chased by the cat.", "Red, blue and yellow.", "Buenos días."]
    seg = encoder.encode_segments(prompts, good)
    feats = features(seg)
    assert feats.shape[1] == 2310 + 2 * 384 and feats.dtype == np.float32
    assert features(seg, "seg-v1").shape[1] == 2310  # heads trained by earlier versions still load and score
    assert np.allclose(feats[:, :2310], features(seg, "seg-v1"))
    assert np.isfinite(r.score(feats)).all()
    own = q.score(feats)
    wins = [own > q.score(features(encoder.encode_segments(prompts, good[k:] + good[:k]))) for k in range(1, 6)]
    assert np.mean(wins) >= 0.8  # 28 of 30 when written; cross-validated rate on Alpaca: ~0.86
