"""SemanticDedup and its FAISS index, on given embeddings (the encoder is tested in tests/models)."""

import numpy as np
import pytest

from quality.dedup.semantic import SemanticDedup, VectorIndex
from quality.reasons import Reason
from quality.records import Example, Message

DIM = 16


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def ex(i, vec=None):
    e = Example(str(i), "sft", "alpaca", (Message("user", f"prompt {i}"), Message("assistant", "answer")))
    if vec is not None:
        e.features.embedding = vec
    return e


def run(stage, batch):
    verdicts = stage(batch)
    stage.commit([e for e, v in zip(batch, verdicts) if v.keep])
    return verdicts


def basis(k):
    v = np.zeros(DIM, dtype=np.float32)
    v[k] = 1.0
    return v


def test_semantic_duplicate_is_rejected_with_similarity_and_neighbour():
    stage = SemanticDedup(threshold=0.9)
    (v,) = run(stage, [ex("a", basis(0))])
    assert v.keep and v.scores["semantic_similarity"] == 0.0
    close = unit(basis(0) + 0.1 * basis(1))
    (v,) = run(stage, [ex("b", close)])
    assert v.reason is Reason.DUPLICATE_SEMANTIC and v.detail == "a"
    assert v.scores["semantic_similarity"] == pytest.approx(float(close[0]), abs=1e-4)
    (v,) = run(stage, [ex("c", basis(2))])
    assert v.keep and v.detail == "a" and v.scores["semantic_similarity"] == pytest.approx(0.0, abs=1e-6)
    assert stage.stats.rejected[Reason.DUPLICATE_SEMANTIC.value] == 1


def test_in_batch_duplicates_and_examples_without_embedding():
    stage = SemanticDedup(threshold=0.9)
    v1, v2, v3 = run(stage, [ex("a", basis(3)), ex("b", basis(3)), ex("c")])
    assert v1.keep and v2.reason is Reason.DUPLICATE_SEMANTIC and v2.detail == "a"
    assert v3.keep and v3.scores == {}


def test_replay_is_not_its_own_duplicate_and_commit_is_idempotent():
    stage = SemanticDedup()
    run(stage, [ex("a", basis(0))])
    stage.commit([ex("a", basis(0))])
    assert len(stage.index) == 1
    assert stage([ex("a", basis(0))])[0].keep


def test_commit_embeds_replayed_examples_without_embedding():
    stage = SemanticDedup(embed=lambda texts: np.stack([basis(5) for _ in texts]))
    stage.commit([ex("a")])
    assert stage([ex("b", basis(5))])[0].reason is Reason.DUPLICATE_SEMANTIC


def test_index_switches_from_flat_to_hnsw_and_keeps_finding_neighbours():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(300, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = VectorIndex(DIM, flat_max=100)
    index.add([str(i) for i in range(100)], vecs[:100])
    assert index.kind == "flat"
    index.add([str(i) for i in range(100, 300)], vecs[100:])
    assert index.kind == "hnsw" and len(index) == 300
    sims, rows = index.search(vecs[:50])
    assert (rows == np.arange(50)).mean() >= 0.95
    assert index.remove("7")
    _, rows = index.search(vecs[7:8])
    assert rows[0] != 7


def test_index_switches_to_ivf_beyond_ivf_min_and_survives_a_snapshot(tmp_path):
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(2000, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = VectorIndex(DIM, flat_max=300, ivf_min=500, ivf_nprobe=8)
    kinds = []
    for start in range(0, 2000, 250):
        index.add([str(i) for i in range(start, start + 250)], vecs[start:start + 250])
        kinds.append(index.kind)
    assert kinds == ["flat", "hnsw", "ivf", "ivf", "ivf", "ivf", "ivf", "ivf"]
    assert index.index.ntotal == 2000 and index.index.nlist == 750 // 39  # trained at the switch (750 vectors)
    _, rows = index.search(vecs[::10])
    assert (rows == np.arange(0, 2000, 10)).mean() >= 0.95  # each stored vector finds itself
    assert index.remove("10")
    _, rows = index.search(vecs[10:11])
    assert rows[0] not in (-1, 10)
    index.save(tmp_path / "ivf")
    loaded = VectorIndex(DIM, flat_max=300, ivf_min=500, ivf_nprobe=8)
    loaded.load(tmp_path / "ivf")
    assert loaded.kind == "ivf" and loaded.index.nprobe == 8 and len(loaded) == 1999
    assert np.array_equal(loaded.search(vecs[:50])[1], index.search(vecs[:50])[1])


def test_snapshot_restore_and_expire(tmp_path):
    clock = iter([1.0, 2.0, 3.0]).__next__
    stage = SemanticDedup(threshold=0.9, flat_max=1, clock=clock)
    for i in range(3):
        run(stage, [ex(str(i), basis(i))])
    stage.snapshot(tmp_path / "sem")
    fresh = SemanticDedup(threshold=0.9, flat_max=1)
    fresh.restore(tmp_path / "sem")
    assert fresh.index.kind == "hnsw" and len(fresh.index) == 3
    assert fresh([ex("q", basis(1))])[0].detail == "1"
    assert fresh.expire(before=2.5) == 2
    assert fresh([ex("q", basis(1))])[0].keep


def test_bad_settings_name_the_parameter():
    with pytest.raises(ValueError, match="threshold"):
        SemanticDedup(threshold=2)
    with pytest.raises(ValueError, match="hnsw_m"):
        SemanticDedup(hnsw_m=1)
    with pytest.raises(ValueError, match="ivf_nprobe"):
        SemanticDedup(ivf_nprobe=0)
    with pytest.raises(ValueError, match="dimension"):
        VectorIndex(4).add(["a"], np.ones((1, 5)))
