"""Durable dedup state: a worker restored from a snapshot plus the accepted tail decides as one
that never stopped; removal by id and time windows; a crash mid-snapshot keeps the old one."""

import dataclasses

import numpy as np
import orjson

from quality.build import build_pipeline
from quality.config import PipelineSettings
from quality.records import RawRecord, parse
from quality.state import DedupWindow, TimedExactIndex, expire_before, load_snapshot, remove_example, save_snapshot


def cheap_settings(**kw):
    """Pipeline settings without the model stage: these tests are about the cheap checks."""
    base = PipelineSettings()
    return dataclasses.replace(base, scoring=dataclasses.replace(base.scoring, enabled=False), **kw)


def record(i, instruction, output):
    return RawRecord(orjson.dumps({"id": f"ex-{i}", "instruction": instruction, "output": output}),
                     {"file": "f", "line": i})


def stream():
    """Originals, exact copies, near copies (a word appended) and fresh examples, interleaved."""
    rng = np.random.default_rng(0)
    vocab = [f"w{v}" for v in range(5000)]
    out = []
    for k in range(60):
        ins = "Explain " + " ".join(rng.choice(vocab, 25))
        outp = "Because " + " ".join(rng.choice(vocab, 30))
        out.append(record(len(out), ins, outp))
        if k % 3 == 0:
            out.append(record(len(out), ins, outp))
        if k % 4 == 0:
            out.append(record(len(out), ins, outp + " indeed"))
    return out


def decide(pipeline, raws, size=16):
    return [(d.id, d.decision, tuple(d.reasons)) for i in range(0, len(raws), size)
            for d in pipeline.process(raws[i:i + size])]


def test_restored_worker_decides_like_one_that_never_stopped(tmp_path):
    raws = stream()
    cut = len(raws) // 2
    reference = decide(build_pipeline(cheap_settings()), raws)
    assert {r for _, _, rs in reference for r in rs} == {"duplicate_exact", "duplicate_near"}

    first = build_pipeline(cheap_settings())
    before = decide(first, raws[: cut // 2])
    save_snapshot(first.stages, tmp_path, meta={"accepted_upto": cut // 2})
    before += decide(first, raws[cut // 2: cut])  # accepted after the snapshot: the "tail"
    accepted_tail = [raws[i] for i in range(cut // 2, cut) if before[i][1] == "accepted"]
    del first  # kill -9

    second = build_pipeline(cheap_settings())
    restored = load_snapshot(second.stages, tmp_path)
    assert restored.complete and restored.meta == {"accepted_upto": cut // 2}
    second.warm([parse(r) for r in accepted_tail])
    after = decide(second, raws[cut:])
    assert before + after == reference


def test_replaying_everything_twice_changes_nothing(tmp_path):
    raws = stream()
    reference = decide(build_pipeline(cheap_settings()), raws)
    accepted = [parse(raws[i]) for i, d in enumerate(reference[:40]) if d[1] == "accepted"]
    worker = build_pipeline(cheap_settings())
    worker.warm(accepted)
    worker.warm(accepted)  # idempotent by id
    assert decide(worker, raws[40:]) == reference[40:]


def test_snapshot_without_state_or_with_new_stage_reports_missing(tmp_path):
    pipeline = build_pipeline(cheap_settings())
    restored = load_snapshot(pipeline.stages, tmp_path)
    assert restored.path is None and not restored.complete
    assert set(restored.missing) == {"exact_dedup", "near_dedup", "semantic_dedup"}
    save_snapshot(pipeline.stages, tmp_path)
    (tmp_path / "CURRENT").read_text()
    restored = load_snapshot(build_pipeline(cheap_settings()).stages, tmp_path)
    assert restored.complete


def test_crash_while_writing_keeps_the_previous_snapshot(tmp_path):
    pipeline = build_pipeline(cheap_settings())
    decide(pipeline, stream()[:10])
    first = save_snapshot(pipeline.stages, tmp_path)
    (tmp_path / f".tmp-snap-{10**20}").mkdir()  # a half-written snapshot left by a crash
    assert (tmp_path / "CURRENT").read_text() == first.name
    fresh = build_pipeline(cheap_settings())
    assert load_snapshot(fresh.stages, tmp_path).complete
    assert len(fresh.stages[[s.name for s in fresh.stages].index("exact_dedup")].index) > 0


def test_remove_example_lets_its_content_in_again():
    pipeline = build_pipeline(cheap_settings())
    raws = stream()
    decide(pipeline, raws[:2])  # ex-0 accepted, ex-1 its exact copy
    removed = remove_example(pipeline.stages, "ex-0")
    assert removed["exact_dedup"] == 1 and removed["near_dedup"] == 1
    (d,) = pipeline.process([raws[1]])
    assert d.decision == "accepted"


def test_window_expires_old_examples_everywhere():
    now = [1000.0]
    index = TimedExactIndex(clock=lambda: now[0])
    index.add(b"k", "a")
    now[0] = 2000.0
    index.add(b"j", "b")
    assert index.expire(1500.0) == 1 and b"k" not in index and b"j" in index
    pipeline = build_pipeline(cheap_settings())
    decide(pipeline, stream()[:5])
    window = DedupWindow(pipeline.stages, window_s=10.0, clock=lambda: 4e9)
    dropped = window.tick()
    assert dropped["exact_dedup"] > 0 and dropped["near_dedup"] > 0
    assert window.tick() == {}  # not again before every_s
    assert expire_before(pipeline.stages, 0.0) == {"exact_dedup": 0, "near_dedup": 0, "semantic_dedup": 0}
    assert np.isfinite(window._last)
