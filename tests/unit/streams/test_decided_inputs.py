"""The skip set recovery hands the worker: offset spans from a snapshot's frontier plus single origins."""

from streams.recovery import DecidedInputs, Frontier


def test_spans_and_origins_answer_membership_and_count_once():
    d = DecidedInputs("raw")
    d.add_range(0, 10, 20)
    d.add_range(0, 15, 22)  # overlapping spans merge
    d.add_range(1, 5, 5)  # empty: ignored
    d.add(("raw", None, 0, 15))  # inside a span: not stored twice
    d.add(("raw", None, 0, 25))
    d.add(("raw", None, 1, 3))
    assert d.ranges == {0: [(10, 22)]}
    assert all(("raw", None, p, o) in d for p, o in [(0, 10), (0, 21), (0, 25), (1, 3)])
    assert ("raw", None, 0, 9) not in d and ("raw", None, 0, 22) not in d and ("other", None, 0, 15) not in d
    assert ("raw", 0) not in d and ("raw", 0, 10) not in d and "raw" not in d
    assert len(d) == 12 + 2
    assert d.ends() == {0: 26, 1: 4}


def test_discard_forgets_single_origins_but_spans_stay_decided():
    d = DecidedInputs("raw")
    d.add_range(0, 0, 5)
    d.add(("raw", None, 0, 7))
    d.discard(("raw", None, 0, 7))
    d.discard(("raw", None, 0, 2))
    assert ("raw", None, 0, 7) not in d and ("raw", None, 0, 2) in d and len(d) == 5


def test_beyond_keeps_what_a_worker_has_not_met_again_as_merged_spans():
    d = DecidedInputs("raw")
    d.add_range(0, 90, 100)  # a frontier span
    for offset in (100, 101, 102, 104):
        d.add(("raw", None, 0, offset))
    d.add(("raw", None, 1, 50))
    assert d.beyond({0: 100}) == {0: [(100, 103), (104, 105)], 1: [(50, 51)]}
    assert d.beyond({0: 95, 1: 51}) == {0: [(95, 103), (104, 105)]}
    assert d.beyond({0: 200, 1: 60}) == {}


def test_frontier_meta_is_json_shaped():
    meta = Frontier({0: 6, 1: 4}, {"acc": {0: 9}, "rej": {}}, {1: [(7, 9)]}).meta()
    assert meta == {"raw_topic_id": None, "decided_end_offsets": {"0": 6, "1": 4},
                    "pending_decided_spans": {"1": [[7, 9]]},
                    "output_end_offsets": {"acc": {"0": 9}, "rej": {}}}


def test_the_topic_id_tells_incarnations_apart_and_envelopes_without_one_match_any():
    """Spans belong to the incarnation the set was built for; single origins carry their own id.
    An origin without an id (an envelope of a Sieve before ids) still matches its offset."""
    d = DecidedInputs("raw", "id-new")
    d.add_range(0, 0, 10)
    d.add(("raw", "id-old", 0, 20))   # the deleted topic's envelope: never matches the new topic
    d.add(("raw", "id-new", 0, 30))
    d.add(("raw", None, 0, 40))        # written before ids
    assert ("raw", "id-new", 0, 5) in d and ("raw", "id-old", 0, 5) not in d
    assert ("raw", "id-new", 0, 20) not in d and ("raw", "id-old", 0, 20) in d
    assert ("raw", "id-new", 0, 30) in d and ("raw", "id-new", 0, 40) in d and ("raw", None, 0, 40) in d
    assert d.ends() == {0: 41}  # the old incarnation's origins are not spans of this one
    assert d.beyond({0: 10}) == {0: [(30, 31), (40, 41)]}
    d.discard(("raw", "id-new", 0, 40))  # skipping the input forgets the id-less origin too
    assert ("raw", "id-new", 0, 40) not in d


def test_add_refuses_an_origin_of_the_wrong_shape():
    import pytest

    with pytest.raises(TypeError, match="topic_id"):
        DecidedInputs("raw").add(("raw", 0, 5))
