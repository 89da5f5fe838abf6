"""Threshold policies: fixed, sliding-window quota, per source, and their specs."""

from __future__ import annotations

import random

import pytest

from quality.scoring.thresholds import FixedThreshold, ThresholdPolicy, WindowQuota, parse_per_source, parse_policy


def test_fixed_threshold_keeps_at_or_above():
    t = FixedThreshold(0.5)
    assert [t.keep(s) for s in (0.49, 0.5, 0.9)] == [False, True, True]
    assert t.version() == {"kind": "fixed", "threshold": 0.5}


def test_quota_keeps_about_the_top_share_of_a_stream():
    rng = random.Random(0)
    q = WindowQuota(0.3, window=500, min_history=50)
    kept = [q.keep(rng.random()) for _ in range(5000)]
    assert 0.27 < sum(kept[500:]) / 4500 < 0.33


def test_quota_prefers_high_scores():
    q = WindowQuota(0.5, window=4, min_history=4)
    for s in (0.1, 0.2, 0.3, 0.4):
        q.keep(s)  # warm-up: kept without a fallback
    assert q.keep(0.35) is True    # only 0.4 beats it among the last 4 (0.1..0.4): 1 < 2
    assert q.keep(0.05) is False   # all of 0.2, 0.3, 0.4, 0.35 beat it
    assert q.keep(0.99) is True


def test_quota_window_slides():
    q = WindowQuota(0.5, window=3, min_history=3)
    for s in (10.0, 10.0, 10.0):
        q.keep(s)
    assert q.keep(1.0) is False
    for s in (0.0, 0.0, 0.0):  # pushes the 10s out of the window
        q.keep(s)
    assert q.keep(1.0) is True


def test_quota_warm_up_uses_the_fallback():
    q = WindowQuota(0.5, window=10, min_history=5, fallback=FixedThreshold(0.5))
    assert [q.keep(s) for s in (0.4, 0.6)] == [False, True]


def test_quota_never_keeps_nan():
    q = WindowQuota(1.0, window=3, min_history=0)
    assert q.keep(float("nan")) is False
    assert q.keep(0.1) is True


@pytest.mark.parametrize("kwargs,match", [({"keep_frac": 0.0}, "keep_frac"), ({"keep_frac": 1.5}, "keep_frac"),
                                          ({"keep_frac": 0.5, "window": 0}, "window"),
                                          ({"keep_frac": 0.5, "window": 5, "min_history": 6}, "min_history")])
def test_quota_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WindowQuota(**kwargs)


def test_parse_policy_specs():
    assert parse_policy("0.25") == FixedThreshold(0.25)
    assert parse_policy(0.1) == FixedThreshold(0.1)
    q = parse_policy("top:80%", window=200)
    assert isinstance(q, WindowQuota) and q.keep_frac == pytest.approx(0.8) and q.window == 200
    assert parse_policy("top:0.5").spec() == "top:0.5"
    with pytest.raises(ValueError, match="per_source\\['x'\\]"):
        parse_policy("high", where="per_source['x']")


def test_per_source_policy_and_default():
    per = parse_per_source(["alpaca=0.9", "dolly = top:0.5"])
    policy = ThresholdPolicy(FixedThreshold(0.1), per)
    assert policy.keep(0.5, "alpaca") is False
    assert policy.keep(0.5, "other") is True
    assert policy.keep(0.5, None) is True
    assert policy.version()["per_source"]["alpaca"] == {"kind": "fixed", "threshold": 0.9}
    with pytest.raises(ValueError, match="SOURCE=0.1"):
        parse_per_source(["alpaca"])


def test_a_restored_window_decides_like_the_live_one():
    rng = random.Random(7)
    scores = [rng.random() for _ in range(300)]
    live = WindowQuota(0.3, window=50, min_history=10)
    for s in scores[:200]:
        live.keep(s)
    back = WindowQuota(0.3, window=50, min_history=10)
    back.restore(live.state())
    assert back.state() == live.state() and len(live.state()) == 50
    assert [back.keep(s) for s in scores[200:]] == [live.keep(s) for s in scores[200:]]
    small = WindowQuota(0.3, window=5, min_history=5)
    small.restore([0.1, float("nan"), 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])  # the last 5 kept, NaN never enters
    assert small.state() == [0.3, 0.4, 0.5, 0.6, 0.7]


def test_policy_state_names_each_quota_and_skips_fixed_thresholds():
    policy = ThresholdPolicy(WindowQuota(0.5, window=10, min_history=5),
                             parse_per_source(["a=top:0.2", "b=0.3"], window=10, min_history=5))
    for s, src in [(0.1, None), (0.9, "a"), (0.5, "b"), (0.4, "zz")]:
        policy.keep(s, src)
    state = policy.state()
    assert state == {"default": [0.1, 0.4], "per_source": {"a": [0.9]}}
    fresh = ThresholdPolicy(WindowQuota(0.5, window=10, min_history=5),
                            parse_per_source(["a=top:0.2", "b=0.3"], window=10, min_history=5))
    fresh.restore(state)
    assert fresh.state() == state
    fixed = ThresholdPolicy(FixedThreshold(0.2))
    assert fixed.quotas() == {} and fixed.state() == {"default": None, "per_source": {}}
    fixed.restore(state)  # nothing to fill: no error
