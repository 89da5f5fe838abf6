"""Durable dedup state: a worker restored from a snapshot plus the accepted tail decides as one
that never stopped; removal by id and time windows; a crash mid-snapshot keeps the old one."""


import numpy as np
import orjson

from quality.dedup.exact import TimedExactIndex
from quality.records import RawRecord, parse
from quality.state import DedupWindow, expire_before, load_snapshot, remove_example, save_snapshot


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


def test_restored_worker_decides_like_one_that_never_stopped(cheap_pipeline, tmp_path):
    raws = stream()
    cut = len(raws) // 2
    reference = decide(cheap_pipeline(), raws)
    assert {r for _, _, rs in reference for r in rs} == {"duplicate_exact", "duplicate_near"}

    first = cheap_pipeline()
    before = decide(first, raws[: cut // 2])
    save_snapshot(first.stages, tmp_path, meta={"accepted_upto": cut // 2})
    before += decide(first, raws[cut // 2: cut])  # accepted after the snapshot: the "tail"
    accepted_tail = [raws[i] for i in range(cut // 2, cut) if before[i][1] == "accepted"]
    del first  # kill -9

    second = cheap_pipeline()
    restored = load_snapshot(second.stages, tmp_path)
    assert restored.complete and restored.meta == {"accepted_upto": cut // 2}
    second.warm([parse(r) for r in accepted_tail])
    after = decide(second, raws[cut:])
    assert before + after == reference


def test_replaying_everything_twice_changes_nothing(cheap_pipeline, tmp_path):
    raws = stream()
    reference = decide(cheap_pipeline(), raws)
    accepted = [parse(raws[i]) for i, d in enumerate(reference[:40]) if d[1] == "accepted"]
    worker = cheap_pipeline()
    worker.warm(accepted)
    worker.warm(accepted)  # idempotent by id
    assert decide(worker, raws[40:]) == reference[40:]


def test_snapshot_without_state_or_with_new_stage_reports_missing(cheap_pipeline, tmp_path):
    pipeline = cheap_pipeline(**{"semantic_dedup.enabled": True})
    restored = load_snapshot(pipeline.stages, tmp_path)
    assert restored.path is None and not restored.complete
    assert set(restored.missing) == {"exact_dedup", "near_dedup", "semantic_dedup"}
    save_snapshot(pipeline.stages, tmp_path)
    (tmp_path / "CURRENT").read_text()
    restored = load_snapshot(cheap_pipeline(**{"semantic_dedup.enabled": True}).stages, tmp_path)
    assert restored.complete


def test_crash_while_writing_keeps_the_previous_snapshot(cheap_pipeline, tmp_path):
    pipeline = cheap_pipeline()
    decide(pipeline, stream()[:10])
    first = save_snapshot(pipeline.stages, tmp_path)
    (tmp_path / f".tmp-snap-{10**20}").mkdir()  # a half-written snapshot left by a crash
    assert (tmp_path / "CURRENT").read_text() == first.name
    fresh = cheap_pipeline()
    assert load_snapshot(fresh.stages, tmp_path).complete
    assert len(fresh.stages[[s.name for s in fresh.stages].index("exact_dedup")].index) > 0


def test_remove_example_lets_its_content_in_again(cheap_pipeline):
    pipeline = cheap_pipeline()
    raws = stream()
    decide(pipeline, raws[:2])  # ex-0 accepted, ex-1 its exact copy
    removed = remove_example(pipeline.stages, "ex-0")
    assert removed["exact_dedup"] == 1 and removed["near_dedup"] == 1
    (d,) = pipeline.process([raws[1]])
    assert d.decision == "accepted"


def test_window_expires_old_examples_everywhere(cheap_pipeline):
    now = [1000.0]
    index = TimedExactIndex(clock=lambda: now[0])
    index.add(b"k", "a")
    now[0] = 2000.0
    index.add(b"j", "b")
    assert index.expire(1500.0) == 1 and b"k" not in index and b"j" in index
    pipeline = cheap_pipeline(**{"semantic_dedup.enabled": True})
    decide(pipeline, stream()[:5])
    window = DedupWindow(pipeline.stages, window_s=10.0)
    dropped = window.advance(4e9)  # an input at time 4e9: everything added before (4e9 - 10 s) goes
    assert dropped["exact_dedup"] > 0 and dropped["near_dedup"] > 0
    assert window.advance(4e9) == {}  # not again within the same step
    assert expire_before(pipeline.stages, 0.0) == {"exact_dedup": 0, "near_dedup": 0, "semantic_dedup": 0}
    assert np.isfinite(window._last)


def test_the_dedup_window_decides_alike_in_file_mode_and_in_stream_batches(cheap_pipeline):
    """pipeline.dedup_window_s is a rule of the core, judged by each input's own time (its Kafka
    timestamp): the file-mode loop (batches of 256) and stream-like micro-batches of uneven sizes
    give the same decisions, and a copy older than the window is accepted again."""
    import random

    from quality.filemode import decide_records

    rows = stream()
    t0 = 1_700_000_000_000  # ms, as Kafka record timestamps
    raws = [RawRecord(r.payload, {"topic": "sieve.raw", "partition": 0, "offset": i, "timestamp": t0 + 7_000 * i})
            for i, r in enumerate(rows)]
    for k in range(20):  # copies of early inputs, 532 to 665 s after them: across the window's edge
        n = len(raws)
        raws.append(RawRecord(rows[2 * k].payload, {"topic": "sieve.raw", "partition": 0, "offset": n,
                                                     "timestamp": t0 + 7_000 * n}))
    n = len(raws)
    raws.append(RawRecord(rows[0].payload, {"topic": "sieve.raw", "partition": 0, "offset": n,
                                            "timestamp": t0 + 7_000 * n + 3_600_000}))  # an hour later still

    def file_mode(window_s):
        out = []
        decide_records(cheap_pipeline(dedup_window_s=window_s), raws, lambda kind, line: out.append(line))
        return [(e["id"], e["decision"], e["reasons"]) for e in map(orjson.loads, out)]

    def stream_mode(window_s, seed):
        pipeline, rng, out, i = cheap_pipeline(dedup_window_s=window_s), random.Random(seed), [], 0
        while i < len(raws):
            n = rng.randint(1, 9)
            out += [(d.id, d.decision, d.reasons) for d in pipeline.process(raws[i:i + n])]
            i += n
        return out

    window = 600.0  # some copies fall inside it, some outside
    decided = file_mode(window)
    assert decided == stream_mode(window, 1) == stream_mode(window, 2)
    forever = file_mode(0.0)
    assert forever[-1][1:] == ("rejected", ["duplicate_exact"]) and decided[-1][1:] == ("accepted", [])
    dup = lambda run: sum(bool(reasons) and reasons[0].startswith("duplicate") for _, _, reasons in run)  # noqa: E731
    assert dup(forever) - 1 > dup(decided) > dup(file_mode(1e9)) - 20  # some copies came back inside, some not
