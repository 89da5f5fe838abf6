"""MinHash signatures and the banded LSH index."""

import numpy as np
import pytest

from quality.dedup.minhash import LSHIndex, MinHasher, candidate_probability, choose_bands, jaccard, text_of, tokens

BASE = ("the quick brown fox jumps over the lazy dog while the farmer sleeps under an old oak tree "
        "near the river and dreams of a golden harvest in the autumn sun")


def true_jaccard(a, b, hasher):
    x, y = set(hasher.hashes(a).tolist()), set(hasher.hashes(b).tolist())
    return len(x & y) / len(x | y)


def test_tokens_casefold_and_split_on_punctuation_keep_non_ascii():
    assert tokens("Hello, WORLD! Größe café") == [b"hello", b"world", "grösse".encode(), "café".encode()]


def test_signature_is_deterministic_and_seed_dependent():
    a, b = MinHasher(seed=1), MinHasher(seed=2)
    assert np.array_equal(a.signatures([BASE]), MinHasher(seed=1).signatures([BASE]))
    assert not np.array_equal(a.signatures([BASE]), b.signatures([BASE]))


def test_estimate_tracks_true_jaccard():
    hasher = MinHasher(num_perm=256, ngram=3)
    words = BASE.split()
    other = " ".join(words[:20] + ["completely", "different", "ending", "here", "now"])
    est = float(jaccard(*hasher.signatures([BASE, other])))
    assert abs(est - true_jaccard(BASE, other, hasher)) < 0.1


def test_batch_equals_one_by_one_and_empty_text_is_sentinel():
    hasher = MinHasher()
    texts = [BASE, "", "short text", BASE.upper()]
    batch = hasher.signatures(texts, chunk_shingles=8)
    single = np.vstack([hasher.signatures([t]) for t in texts])
    assert np.array_equal(batch, single)
    assert (batch[1] == np.iinfo(np.uint32).max).all()
    assert np.array_equal(batch[0], batch[3])  # casefolded


def test_choose_bands_reaches_recall_at_threshold():
    for t in (0.6, 0.7, 0.8, 0.9):
        b, r = choose_bands(128, t)
        assert b * r <= 128
        assert candidate_probability(t, b, r) >= 0.99
    with pytest.raises(ValueError, match="threshold"):
        choose_bands(128, 1.5)


def test_lsh_finds_near_duplicate_and_not_unrelated():
    hasher = MinHasher(ngram=3)
    index = LSHIndex(128, *choose_bands(128, 0.7))
    texts = [BASE, "an entirely unrelated sentence about databases and index structures in computer science"]
    index.add(["a", "b"], hasher.signatures(texts))
    near = BASE.replace("golden", "silver")
    (row, sim), = index.best_matches(hasher.signatures([near]))
    assert index.ids[row] == "a" and sim > 0.7
    (row, sim), = index.best_matches(hasher.signatures(["nothing in common with anything stored at all, really"]))
    assert row == -1 and sim == 0.0


def test_add_is_idempotent_remove_and_expire_make_rows_unmatchable():
    hasher = MinHasher()
    index = LSHIndex(128, 16, 8)
    sig = hasher.signatures([BASE])
    assert index.add(["a"], sig, [10.0]) == 1
    assert index.add(["a"], sig, [10.0]) == 0
    assert len(index) == 1 and "a" in index
    assert index.remove("a") and not index.remove("a")
    assert index.best_matches(sig) == [(-1, 0.0)]
    index.add(["b"], sig, [5.0])
    index.add(["c"], hasher.signatures([BASE + " extra words"]), [20.0])
    assert index.expire(before=6.0) == 1
    assert "b" not in index and "c" in index


def test_many_adds_cross_the_merge_and_state_round_trips():
    rng = np.random.default_rng(0)
    index = LSHIndex(64, 16, 4)
    sigs = rng.integers(0, 2**32 - 2, size=(70_000, 64), dtype=np.uint32)
    for start in range(0, len(sigs), 10_000):
        index.add([str(i) for i in range(start, start + 10_000)], sigs[start:start + 10_000])
    probe = [3, 65_432, 69_999]
    assert [index.ids[r] for r, _ in index.best_matches(sigs[probe])] == ["3", "65432", "69999"]
    restored = LSHIndex.from_state(index.state())
    assert restored.best_matches(sigs[probe]) == index.best_matches(sigs[probe])
    assert len(restored) == 70_000


def test_bad_parameters_name_themselves():
    with pytest.raises(ValueError, match="num_perm"):
        MinHasher(num_perm=1)
    with pytest.raises(ValueError, match="bands"):
        LSHIndex(16, 5, 4)
    with pytest.raises(ValueError, match="unknown text field"):
        text_of(object(), ["title"])


def reference_candidates(index, stored_sigs, query_sigs):
    """Brute force: every (query, stored row) pair with an equal band key."""
    stored, query = index.band_keys(stored_sigs), index.band_keys(query_sigs)
    return {(q, r) for q in range(len(query)) for r in range(len(stored))
            if (stored[r] == query[q]).any()}


def test_bucket_directory_finds_exactly_the_pairs_that_share_a_band():
    rng = np.random.default_rng(4)
    index = LSHIndex(16, 8, 2)
    # 2-value bands of values in 0..3 collide a lot, so buckets hold many equal keys
    stored = rng.integers(0, 4, size=(300, 16), dtype=np.uint32)
    for start in range(0, 300, 100):
        index.add([f"s{i}" for i in range(start, start + 100)], stored[start:start + 100])
    index._merge()
    index.add([f"t{i}" for i in range(20)], stored[:20])  # the same signatures again, in the recent level
    query = rng.integers(0, 4, size=(40, 16), dtype=np.uint32)
    q, r = index.candidate_pairs(query)
    all_sigs = np.vstack([stored, stored[:20]])
    assert set(zip(q.tolist(), r.tolist())) == reference_candidates(index, all_sigs, query)
    assert len(index._rkeys) > 0 and len(index._dir) == 2 ** (len(index._keys).bit_length() - 1) + 1


def test_banding_finds_99_percent_of_pairs_at_or_above_threshold():
    """Pairs of word sets with true Jaccard in [0.8, 1] (default banding for 0.8: 21 x 6)."""
    rng = np.random.default_rng(5)
    hasher = MinHasher(num_perm=128, ngram=1)
    index = LSHIndex(128, *choose_bands(128, 0.8))
    originals, variants, truths = [], [], []
    for p in range(2000):
        words = [f"w{p}x{k}" for k in range(100)]
        shared = int(rng.integers(89, 101))  # Jaccard shared / (200 - shared): 0.80 .. 1.0
        other = words[:shared] + [f"v{p}x{k}" for k in range(100 - shared)]
        originals.append(" ".join(words))
        variants.append(" ".join(rng.permutation(other)))
        truths.append(shared / (200 - shared))
    assert min(truths) >= 0.8
    index.add([str(p) for p in range(2000)], hasher.signatures(originals))
    q, r = index.candidate_pairs(hasher.signatures(variants))
    found = len({p for p, row in zip(q.tolist(), r.tolist()) if index.ids[row] == str(p)})
    assert found / 2000 >= 0.99
