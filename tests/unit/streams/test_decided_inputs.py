"""The skip set recovery hands the worker: offset spans from a snapshot's frontier plus single origins."""

from streams.recovery import DecidedInputs, Frontier


def test_spans_and_origins_answer_membership_and_count_once():
    d = DecidedInputs("raw")
    d.add_range(0, 10, 20)
    d.add_range(0, 15, 22)  # overlapping spans merge
    d.add_range(1, 5, 5)  # empty: ignored
    d.add(("raw", 0, 15))  # inside a span: not stored twice
    d.add(("raw", 0, 25))
    d.add(("raw", 1, 3))
    assert d.ranges == {0: [(10, 22)]}
    assert ("raw", 0, 10) in d and ("raw", 0, 21) in d and ("raw", 0, 25) in d and ("raw", 1, 3) in d
    assert ("raw", 0, 9) not in d and ("raw", 0, 22) not in d and ("other", 0, 15) not in d
    assert ("raw", 0) not in d and "raw" not in d
    assert len(d) == 12 + 2
    assert d.ends() == {0: 26, 1: 4}


def test_discard_forgets_single_origins_but_spans_stay_decided():
    d = DecidedInputs("raw")
    d.add_range(0, 0, 5)
    d.add(("raw", 0, 7))
    d.discard(("raw", 0, 7))
    d.discard(("raw", 0, 2))
    assert ("raw", 0, 7) not in d and ("raw", 0, 2) in d and len(d) == 5


def test_beyond_keeps_what_a_worker_has_not_met_again_as_merged_spans():
    d = DecidedInputs("raw")
    d.add_range(0, 90, 100)  # a frontier span
    for offset in (100, 101, 102, 104):
        d.add(("raw", 0, offset))
    d.add(("raw", 1, 50))
    assert d.beyond({0: 100}) == {0: [(100, 103), (104, 105)], 1: [(50, 51)]}
    assert d.beyond({0: 95, 1: 51}) == {0: [(95, 103), (104, 105)]}
    assert d.beyond({0: 200, 1: 60}) == {}


def test_frontier_meta_is_json_shaped():
    meta = Frontier({0: 6, 1: 4}, {"acc": {0: 9}, "rej": {}}, {1: [(7, 9)]}).meta()
    assert meta == {"decided_end_offsets": {"0": 6, "1": 4}, "pending_decided_spans": {"1": [[7, 9]]},
                    "output_end_offsets": {"acc": {"0": 9}, "rej": {}}}
