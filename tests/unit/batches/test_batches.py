"""Fine-tuning batches: triggers, the stable split, no id twice, restarts, checksums, loading with datasets."""

import inspect
import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from batches.assembler import BatchAssembler, StateLockedError, read_ledger
from batches.manifest import split_of, verify_files
from quality.filemode import read_records

REPO = Path(__file__).resolve().parents[3]


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def sft(i, source="src-a", category=None, response=None, scores=None):
    env = {"id": f"ex-{i}", "decision": "accepted", "reasons": [], "scores": scores or {"quality": 0.5 + i / 1000},
           "example": {"messages": [{"role": "user", "content": f"Question number {i}?"},
                                    {"role": "assistant", "content": response or f"Answer number {i}."}]},
           "origin": {"file": "t", "line": i}, "versions": {"pipeline": "test"}, "source": source}
    if category:
        env["metadata"] = {"category": category}
    return env


def pair(i, chosen="A kind, helpful answer.", source="src-p"):
    return {"id": f"pair-{i}", "decision": "accepted", "reasons": [], "scores": {},
            "example": {"prompt": [{"role": "user", "content": f"Prompt {i}"}],
                        "chosen": [{"role": "assistant", "content": chosen}],
                        "rejected": [{"role": "assistant", "content": "A curt answer."}]},
            "origin": {}, "versions": {"pipeline": "test"}, "source": source}


def rejected(i, reason):
    return {"id": f"rej-{i}", "decision": "rejected", "reasons": [reason], "scores": {}, "example": None}


def shard_ids(manifest):
    """Every id in every JSONL shard of a batch, read back from disk."""
    ids = []
    for f in manifest["files"]:
        if f["format"] == "json":
            ids += [json.loads(line)["id"] for line in Path(f["local_path"]).read_text().splitlines()]
    return ids


def make(tmp_path, **kw):
    kw.setdefault("report", False)
    return BatchAssembler(tmp_path / "batches", **kw)


def test_count_trigger_closes_exactly_at_max_examples(tmp_path):
    a = make(tmp_path, max_examples=5, max_age_s=0)
    closed = a.feed([sft(i) for i in range(12)])
    assert [m["trigger"] for m in closed] == ["count", "count"]
    assert [m["counts"]["examples"] for m in closed] == [5, 5]
    assert a.open_count == 2
    assert [e["batch_id"] for e in read_ledger(tmp_path / "batches")] == [m["batch_id"] for m in closed]


def test_age_trigger_uses_the_oldest_open_example(tmp_path):
    clock = FakeClock()
    a = make(tmp_path, max_examples=0, max_age_s=60, clock=clock)
    assert a.tick() is None  # nothing open: nothing to close, however old
    a.feed([sft(0)])
    clock.t += 30
    a.feed([sft(1)])
    clock.t += 29.9
    assert a.tick() is None
    clock.t += 0.1
    m = a.tick()
    assert m["trigger"] == "age" and m["counts"]["examples"] == 2
    assert a.open_count == 0 and a.age_s() == 0.0


def test_request_trigger_and_stale_requests(tmp_path):
    clock = FakeClock()
    a = make(tmp_path, max_examples=0, max_age_s=0, clock=clock)
    assert a.request_close() is None  # empty batch: nothing to cut
    a.feed([sft(0), sft(1)])
    m = a.request_close(requested_at=clock.t)
    assert m["trigger"] == "request" and m["counts"]["examples"] == 2
    a.feed([sft(2)])
    clock.t += 5
    assert a.request_close(requested_at=clock.t - 10) is None  # made before the last close: a replay
    assert a.open_count == 1
    assert a.request_close(requested_at=clock.t)["counts"]["examples"] == 1
    a.feed([sft(3)])
    assert a.request_close(requested_at=1_600_000_000.0) is None  # older than the state directory


def test_a_new_process_ignores_cuts_from_before_its_state_existed(tmp_path):
    clock = FakeClock()
    a = make(tmp_path, max_examples=0, max_age_s=0, clock=clock)
    a.feed([sft(0)])
    a.shutdown()
    clock.t += 100
    b = make(tmp_path, max_examples=0, max_age_s=0, clock=clock)  # same state: its creation time persists
    assert b.request_close(requested_at=clock.t - 150) is None
    assert b.request_close(requested_at=clock.t - 50)["counts"]["examples"] == 1


def test_split_is_stable_per_id_and_close_to_the_ratio():
    ids = [f"id-{i}" for i in range(20_000)]
    splits = [split_of(i, 0.1) for i in ids]
    assert splits == [split_of(i, 0.1) for i in ids]
    share = splits.count("validation") / len(ids)
    assert 0.09 < share < 0.11
    assert {split_of(i, 0.0) for i in ids[:500]} == {"train"}
    assert split_of("id-1", 0.1, salt="other") in ("train", "validation")


def test_split_does_not_depend_on_the_rest_of_the_batch(tmp_path):
    a = make(tmp_path / "a", max_examples=0, max_age_s=0)
    b = make(tmp_path / "b", max_examples=0, max_age_s=0)
    a.feed([sft(i) for i in range(200)])
    b.feed([sft(i) for i in range(150, 400)])
    where = {}
    for m in (a.close("request"), b.close("request")):
        for f in m["files"]:
            for line in Path(f["local_path"]).read_text().splitlines() if f["format"] == "json" else []:
                id_ = json.loads(line)["id"]
                assert where.setdefault(id_, f["split"]) == f["split"] == split_of(id_, 0.1)
    assert len(where) == 400


def test_no_id_is_batched_twice_within_or_across_batches(tmp_path):
    a = make(tmp_path, max_examples=4, max_age_s=0)
    feed = [sft(0), sft(1), sft(1), sft(2), sft(3), sft(0), sft(4), sft(2), sft(5), sft(6), sft(7), sft(3)]
    closed = a.feed(feed)
    assert a.close("request") is None  # 8 distinct ids, 4 per batch: nothing left open
    assert len(closed) == 2
    all_ids = [i for m in closed for i in shard_ids(m)]
    assert sorted(all_ids) == sorted({e["id"] for e in feed})  # each once, none dropped
    # the last repeat arrived after the second close: it counts in the next batch's window
    assert [m["window"]["redelivered"] for m in closed] == [1, 2] and a.window.redelivered == 1
    assert a.redelivered_total == len(feed) - 8


def test_invalid_accepted_envelopes_are_counted_not_batched(tmp_path):
    a = make(tmp_path, max_examples=0, max_age_s=0)
    a.feed([sft(0), {"decision": "accepted", "id": "x", "example": {"text": "?"}}, {"decision": "accepted"}])
    m = a.close("request")
    assert m["counts"]["examples"] == 1 and m["window"]["invalid_accepted"] == 2


def test_window_counts_rejections_and_duplicate_rates(tmp_path):
    a = make(tmp_path, max_examples=0, max_age_s=0)
    a.feed([sft(0), rejected(1, "duplicate_exact"), rejected(2, "duplicate_near"), rejected(3, "refusal"),
            sft(1), {"decision": "dead_letter", "reasons": ["invalid_json"], "id": "d"}])
    w = a.close("request")["window"]
    assert w["decisions"] == {"accepted": 2, "rejected": 3, "dead_letter": 1}
    assert w["reasons"] == {"duplicate_exact": 1, "duplicate_near": 1, "refusal": 1, "invalid_json": 1}
    assert w["duplicate_rates"]["duplicate_exact"] == pytest.approx(1 / 6, abs=1e-6)
    assert w["duplicate_rates"]["duplicate_semantic"] == 0.0


def test_balance_refusal_share_and_statistics(tmp_path):
    a = make(tmp_path, max_examples=0, max_age_s=0)
    a.feed([sft(0, "a", "open_qa"), sft(1, "a", "open_qa"), sft(2, "b", "brainstorming"),
            sft(3, "b", response="I'm sorry, but I can't help with that request."),
            pair(0), pair(1, chosen="As an AI language model, I cannot do that.")])
    m = a.close("request")
    assert m["balance"]["source"]["a"] == {"count": 2, "share": pytest.approx(2 / 6, abs=1e-6)}
    assert m["balance"]["category"]["open_qa"]["count"] == 2
    assert m["balance"]["category"]["unknown"]["count"] == 3
    assert m["balance"]["kind"]["preference"]["count"] == 2
    assert m["refusals"]["count"] == 2 and m["refusals"]["share"] == pytest.approx(2 / 6, abs=1e-6)
    assert m["stats"]["scores"]["quality"]["count"] == 4
    assert m["stats"]["lengths"]["response_chars"]["min"] > 0
    assert m["versions"]["pipeline"] == [{"versions": {"pipeline": "test"}, "examples": 6}]
    assert m["counts"]["by_kind"]["sft"]["train"] + m["counts"]["by_kind"]["sft"]["validation"] == 4


def test_manifest_checksums_match_and_catch_tampering(tmp_path):
    a = make(tmp_path, max_examples=0, max_age_s=0, report=True)
    a.feed([sft(i) for i in range(30)] + [pair(i) for i in range(10)])
    m = a.close("request")
    on_disk = json.loads((Path(m["location"]["dir"]) / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(m))
    assert verify_files(on_disk) == []
    assert {f["path"] for f in on_disk["files"]} >= {"report.html", "sft/train-00000-of-00001.jsonl",
                                                     "sft/train-00000-of-00001.parquet",
                                                     "preference/train-00000-of-00001.jsonl"}
    victim = Path(on_disk["location"]["dir"]) / "sft/train-00000-of-00001.jsonl"
    victim.write_bytes(victim.read_bytes().replace(b"Answer", b"Anzwer", 1))
    problems = verify_files(on_disk)
    assert len(problems) == 1 and problems[0].startswith("sft/train-00000-of-00001.jsonl: sha256")


def test_load_with_datasets_from_the_manifest_alone(tmp_path):
    datasets = pytest.importorskip("datasets")  # part of the test extra
    a = make(tmp_path, max_examples=0, max_age_s=0, shard_max_rows=7)
    a.feed([sft(i) for i in range(40)] + [pair(i) for i in range(12)])
    manifest_path = Path(a.close("request")["location"]["dir"]) / "manifest.json"
    del a
    manifest = json.loads(manifest_path.read_text())  # only the manifest from here on
    sft_files = manifest["datasets"]["sft"]["json"]
    assert len(sft_files["train"]) > 1  # 7 rows per shard: several shards
    ds = datasets.load_dataset("json", data_files=sft_files, cache_dir=str(tmp_path / "hf"))
    counts = manifest["counts"]["by_kind"]["sft"]
    assert ds["train"].num_rows == counts["train"] and ds["validation"].num_rows == counts["validation"]
    row = ds["train"][0]
    assert row["messages"][-1]["role"] == "assistant" and set(row["messages"][0]) == {"role", "content"}
    pref = datasets.load_dataset("json", data_files=manifest["datasets"]["preference"]["json"],
                                 cache_dir=str(tmp_path / "hf"))
    assert {"prompt", "chosen", "rejected"} <= set(pref["train"].column_names)
    assert pref["train"][0]["chosen"][0]["role"] == "assistant"
    pq = datasets.load_dataset("parquet", data_files=manifest["datasets"]["preference"]["parquet"],
                               cache_dir=str(tmp_path / "hf"))
    assert sorted(pq["train"]["id"]) == sorted(pref["train"]["id"])
    ids = [i for split in ds.values() for i in split["id"]] + [i for split in pref.values() for i in split["id"]]
    assert len(ids) == len(set(ids)) == 52


def test_a_batch_loads_whatever_its_first_rows_lack(tmp_path):
    """``datasets`` types a JSON dataset by the first rows of its first train file and casts every other
    file to them: rows without a source there (null all through) and a force-accepted row only in the
    validation split (a column the train rows lacked) each made load_dataset fail on the whole batch."""
    datasets = pytest.importorskip("datasets")
    override = {"action": "force_accept", "who": "ana", "note": "a false duplicate", "at": 1.0}
    val = next(i for i in range(100, 200) if split_of(f"ex-{i}", 0.2) == "validation")
    a = make(tmp_path, max_examples=0, max_age_s=0, shard_max_rows=5, validation_ratio=0.2)
    a.feed([sft(i, source=None) for i in range(12)] + [sft(i) for i in range(12, 30)]
           + [{**sft(val), "overridden": override}] + [pair(i, source=None) for i in range(3)] + [pair(3)])
    m = a.close("request")
    assert m["counts"]["by_kind"]["sft"]["validation"] > 1 and m["counts"]["overridden"] == 1
    for kind in ("sft", "preference"):
        for fmt in ("json", "parquet"):
            ds = datasets.load_dataset(fmt, data_files=m["datasets"][kind][fmt], cache_dir=str(tmp_path / "hf"))
            rows = [r for split in ds.values() for r in split]
            assert len(rows) == m["counts"]["by_kind"][kind]["train"] + m["counts"]["by_kind"][kind]["validation"]
            assert {r["source"] for r in rows} == ({"", "src-a"} if kind == "sft" else {"", "src-p"}), (kind, fmt)
            assert [r["id"] for r in rows if r["overridden"]] == ([f"ex-{val}"] if kind == "sft" else []), fmt
    assert m["overrides"]["accepted"] == [{"id": f"ex-{val}", "who": "ana", "note": "a false duplicate", "at": 1.0}]


def test_empty_split_gets_no_file(tmp_path):
    a = make(tmp_path, max_examples=0, max_age_s=0, validation_ratio=0.0)
    a.feed([sft(i) for i in range(5)])
    m = a.close("request")
    assert set(m["datasets"]["sft"]["json"]) == {"train"}
    assert m["counts"]["by_split"] == {"train": 5, "validation": 0}


def test_counts_list_every_kind_and_split_while_datasets_list_only_what_has_rows(tmp_path):
    """``datasets`` is passed to ``load_dataset``, which refuses an empty ``data_files`` list, so it names
    only kinds and splits with rows; ``counts.by_kind`` is read by people and code alike: always complete."""
    a = make(tmp_path, max_examples=0, max_age_s=0, validation_ratio=0.0)
    a.feed([sft(i) for i in range(3)])
    m = a.close("request")
    assert m["counts"]["by_kind"] == {"sft": {"train": 3, "validation": 0},
                                      "preference": {"train": 0, "validation": 0}}
    assert set(m["datasets"]) == set(m["load"]) == {"sft"}
    assert {f["kind"] for f in m["files"] if f["format"] == "json"} == {"sft"}


def test_uri_prefix_is_what_trainers_see(tmp_path):
    a = make(tmp_path, max_examples=0, max_age_s=0, uri_prefix="s3://bucket/batches/")
    a.feed([sft(0)])
    m = a.close("request")
    bid = m["batch_id"]
    assert m["datasets"]["sft"]["json"]["train"] == [f"s3://bucket/batches/{bid}/sft/train-00000-of-00001.jsonl"]
    assert m["files"][0]["local_path"].startswith(str(tmp_path))


def test_restart_keeps_the_open_batch_and_the_batched_ids(tmp_path):
    a = make(tmp_path, max_examples=5, max_age_s=0)
    first = a.feed([sft(i) for i in range(7)])
    a.shutdown()
    b = make(tmp_path, max_examples=5, max_age_s=0)
    assert b.open_count == 2
    second = b.feed([sft(i) for i in range(4, 10)])  # 4..6 were seen before the restart
    assert [m["counts"]["examples"] for m in first + second] == [5, 5]
    all_ids = [i for m in first + second for i in shard_ids(m)]
    assert sorted(all_ids) == sorted(f"ex-{i}" for i in range(10))


def test_a_restart_with_a_smaller_count_closes_on_the_next_tick(tmp_path):
    a = make(tmp_path, max_examples=10, max_age_s=0)
    a.feed([sft(i) for i in range(6)])
    a.shutdown()
    b = make(tmp_path, max_examples=4, max_age_s=0)
    m = b.tick()
    assert m["trigger"] == "count" and m["counts"]["examples"] == 6 and b.open_count == 0


def test_a_second_process_cannot_own_the_directory(tmp_path):
    owner = make(tmp_path)
    with pytest.raises(StateLockedError, match="in use by another process"):
        make(tmp_path)
    owner.shutdown()
    make(tmp_path).shutdown()  # released: the next owner gets it


@pytest.mark.parametrize("kw, name", [({"max_examples": -1}, "max_examples"), ({"max_age_s": -1}, "max_age_s"),
                                      ({"validation_ratio": 1.0}, "validation_ratio"),
                                      ({"shard_max_rows": 0}, "shard_max_rows")])
def test_bad_parameters_name_themselves(tmp_path, kw, name):
    with pytest.raises(ValueError, match=name):
        make(tmp_path, **kw)


CRASH = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {repo!r})
    import batches.assembler as qb
    {sft_src}
    point = {point!r}
    if point == "before_ledger":      # batch dir renamed into place, ids not yet written
        real = qb.write_atomic
        def boom(path, data):
            if "ids" in path.parts:
                os._exit(9)
            return real(path, data)
        qb.write_atomic = boom
    if point == "after_ledger":       # ledger line written, open.jsonl not yet reset
        real_reset = qb.BatchAssembler._reset_open
        def boom(self, start):
            if self.last_seq >= 1:
                os._exit(9)
            return real_reset(self, start)
        qb.BatchAssembler._reset_open = boom
    a = qb.BatchAssembler({root!r}, max_examples=5, max_age_s=0, report=False)
    a.feed([sft(i) for i in range(3)])
    a.flush()
    if point == "after_flush":
        os._exit(9)
    a.feed([sft(i) for i in range(3, 6)])
    os._exit(0)
""")


@pytest.mark.parametrize("point", ["after_flush", "before_ledger", "after_ledger"])
def test_a_crash_loses_nothing_and_batches_nothing_twice(tmp_path, point):
    root = tmp_path / "batches"
    proc = subprocess.run([sys.executable, "-c", CRASH.format(repo=str(REPO), root=str(root), point=point,
                                                                  sft_src=inspect.getsource(sft))],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    a = BatchAssembler(root, max_examples=5, max_age_s=0, report=False)
    assert not list(root.glob(".tmp-*"))
    closed = a.feed([sft(i) for i in range(8)])  # the producer redelivers what was not committed
    closed.append(a.close("request"))
    ids = [i for e in read_ledger(root) for i in shard_ids(a.manifest(e["batch_id"]))]
    assert sorted(ids) == sorted(f"ex-{i}" for i in range(8)), point
    assert len({p.name for p in root.iterdir() if p.name != "_state"}) == len(read_ledger(root))


def test_torn_last_line_is_dropped_and_appends_continue(tmp_path):
    a = make(tmp_path, max_examples=0, max_age_s=0)
    a.feed([sft(0), sft(1)])
    a.shutdown()
    with open(tmp_path / "batches" / "_state" / "open.jsonl", "ab") as fh:
        fh.write(b'{"t": 1, "e": {"id": "ex-9", "exam')  # a crash mid-append
    b = make(tmp_path, max_examples=0, max_age_s=0)
    assert b.open_count == 2
    b.feed([sft(2)])
    b.shutdown()
    c = make(tmp_path, max_examples=0, max_age_s=0)
    assert sorted(shard_ids(c.close("request"))) == ["ex-0", "ex-1", "ex-2"]


def test_real_decisions_from_file_mode(cheap_pipeline, tmp_path, mit_sample):
    pipeline = cheap_pipeline()
    decisions = pipeline.process(list(read_records([mit_sample])))
    a = make(tmp_path, max_examples=1000, max_age_s=0)
    a.feed_decisions(decisions, pipeline.versions())
    m = a.close("end_of_input")
    accepted = [d for d in decisions if d.decision == "accepted"]
    assert m["counts"]["examples"] == len(accepted)
    assert set(m["counts"]["by_kind"]) == {"sft", "preference"}
    assert m["window"]["reasons"] == dict(Counter(d.reasons[0] for d in decisions if d.decision != "accepted"))
    assert sorted(shard_ids(m)) == sorted(d.id for d in accepted)
    assert m["versions"]["pipeline"][0]["versions"] == json.loads(json.dumps(pipeline.versions()))


def test_a_reused_id_with_other_content_is_batched_but_a_redelivery_is_not(tmp_path):
    """Producers may reuse ids (files numbered from 1); only a true redelivery is dropped."""
    from batches.assembler import BatchAssembler

    def env(i, text):
        return {"id": i, "decision": "accepted", "reasons": [], "scores": {}, "source": "t",
                "example": {"messages": [{"role": "user", "content": "Say something."},
                                         {"role": "assistant", "content": text}]}}

    asm = BatchAssembler(tmp_path / "batches", max_examples=0, max_age_s=0)
    asm.feed([env("1", "First answer."), env("1", "A different answer."), env("1", "First answer.")])
    manifest = asm.close("request")
    assert manifest["counts"]["examples"] == 2 and asm.redelivered_total == 1


def test_manifest_records_the_batch_age_at_close(tmp_path):
    from batches.assembler import BatchAssembler

    now = [1000.0]
    asm = BatchAssembler(tmp_path / "b", max_examples=0, max_age_s=0, clock=lambda: now[0])
    asm.feed([{"id": "a", "decision": "accepted", "reasons": [], "scores": {}, "source": "t",
               "example": {"messages": [{"role": "user", "content": "Hi there."},
                                        {"role": "assistant", "content": "Hello."}]}}])
    now[0] = 1042.5
    assert asm.close("request")["age_at_close_s"] == 42.5
