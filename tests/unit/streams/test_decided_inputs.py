"""The skip set recovery hands the worker: offset ranges from a snapshot's frontier plus single origins."""

from streams.recovery import DecidedInputs, Frontier


def test_ranges_and_origins_answer_membership_and_count_once():
    d = DecidedInputs("raw", ranges={0: (10, 20)})
    d.add(("raw", 0, 15))  # inside the range: not stored twice
    d.add(("raw", 0, 25))
    d.add(("raw", 1, 3))
    assert ("raw", 0, 10) in d and ("raw", 0, 19) in d and ("raw", 0, 25) in d and ("raw", 1, 3) in d
    assert ("raw", 0, 9) not in d and ("raw", 0, 20) not in d and ("other", 0, 15) not in d
    assert ("raw", 0) not in d and "raw" not in d
    assert len(d) == 10 + 2
    assert d.ends() == {0: 26, 1: 4}


def test_discard_forgets_single_origins_but_ranges_stay_decided():
    d = DecidedInputs("raw", ranges={0: (0, 5)})
    d.add(("raw", 0, 7))
    d.discard(("raw", 0, 7))
    d.discard(("raw", 0, 2))
    assert ("raw", 0, 7) not in d and ("raw", 0, 2) in d and len(d) == 5


def test_frontier_meta_is_json_shaped():
    meta = Frontier({0: 6, 1: 4}, {"acc": {0: 9}, "rej": {}}).meta()
    assert meta == {"decided_end_offsets": {"0": 6, "1": 4}, "output_end_offsets": {"acc": {"0": 9}, "rej": {}}}
