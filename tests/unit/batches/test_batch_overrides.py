"""The batcher honours operators' overrides: force-reject leaves the open batch, is revoked from a
closed one in the next manifest and blocks later arrivals; force-accept joins, marked; all of it
survives a restart and a redelivered record changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

from batches.assembler import BatchAssembler
from batches.overrides import LOG_FILE
from quality.overrides import FORCE_ACCEPT, FORCE_REJECT, make_override



def sft(i):
    return {"id": f"ex-{i}", "decision": "accepted", "reasons": [], "scores": {"quality": 0.5},
            "example": {"messages": [{"role": "user", "content": f"Question number {i}?"},
                                     {"role": "assistant", "content": f"Answer number {i}."}]},
            "origin": {"file": "t", "line": i}, "versions": {"pipeline": "test"}, "source": "src-a"}


def make(root: Path, **kw) -> BatchAssembler:
    kw.setdefault("report", False)
    kw.setdefault("max_age_s", 0)
    return BatchAssembler(root, **kw)


def reject(ex_id, at=1.0, who="ana"):
    return make_override(ex_id, FORCE_REJECT, "leaks a customer name", who, at, decision_was="accepted")


def accept(i, at=2.0):
    env = sft(i)
    return make_override(env["id"], FORCE_ACCEPT, "a false duplicate", "bo", at, decision_was="rejected",
                         reasons_was=["duplicate_near"], example=env["example"], source="src-a")


def shard_rows(manifest):
    rows = []
    for f in manifest["files"]:
        if f["format"] == "json":
            rows += [json.loads(line) for line in Path(f["local_path"]).read_text().splitlines()]
    return rows


def test_force_reject_removes_an_open_example_and_blocks_its_return(tmp_path):
    a = make(tmp_path, max_examples=10)
    a.feed([sft(i) for i in range(3)])
    assert a.apply_override(reject("ex-1")) == []
    assert a.open_count == 2
    a.feed([sft(1)])  # the same accepted envelope again (a redelivery, or the worker's lag)
    assert a.open_count == 2
    m = a.close("request")
    assert sorted(r["id"] for r in shard_rows(m)) == ["ex-0", "ex-2"]
    assert m["overrides"]["removed_from_open"] == [{"id": "ex-1", "who": "ana", "note": "leaks a customer name",
                                                    "at": 1.0}]
    assert m["revoked"] == [] and m["counts"]["overridden"] == 0


def test_force_reject_of_a_batched_id_is_revoked_in_the_next_manifest_only(tmp_path):
    a = make(tmp_path, max_examples=3)
    [first] = a.feed([sft(i) for i in range(3)])
    a.apply_override(reject("ex-1"))
    [second] = a.feed([sft(i) for i in range(3, 6)])
    assert second["revoked"] == [{"id": "ex-1", "batch_id": first["batch_id"], "who": "ana",
                                  "note": "leaks a customer name", "at": 1.0}]
    [third] = a.feed([sft(i) for i in range(6, 9)])
    assert third["revoked"] == []


def test_force_accept_joins_the_open_batch_marked(tmp_path):
    a = make(tmp_path, max_examples=3)
    a.feed([sft(0), sft(1)])
    [m] = a.apply_override(accept(7))  # the third example fills the batch
    rows = {r["id"]: r for r in shard_rows(m)}
    assert rows["ex-7"]["overridden"] is True and rows["ex-0"]["overridden"] is False  # who and why: the manifest
    assert m["counts"]["overridden"] == 1
    assert m["overrides"]["accepted"] == [{"id": "ex-7", "who": "bo", "note": "a false duplicate", "at": 2.0}]


def test_a_redelivered_override_changes_nothing(tmp_path):
    a = make(tmp_path, max_examples=10)
    a.feed([sft(0)])
    a.apply_override(accept(5))
    a.apply_override(accept(5))
    assert a.open_count == 2
    a.apply_override(reject("ex-9"))
    a.apply_override(reject("ex-9"))
    lines = (tmp_path / "_state" / LOG_FILE).read_text().splitlines()
    assert len(lines) == 2


def test_a_later_force_accept_lifts_a_force_reject(tmp_path):
    a = make(tmp_path, max_examples=10)
    a.apply_override(reject("ex-4", at=1.0))
    a.feed([sft(4)])
    assert a.open_count == 0
    a.apply_override(accept(4, at=3.0))
    assert a.open_count == 1


def test_blocks_and_pending_revocations_survive_a_restart(tmp_path):
    a = make(tmp_path, max_examples=2)
    [first] = a.feed([sft(0), sft(1)])
    a.feed([sft(2)])
    a.apply_override(reject("ex-0"))
    a.apply_override(reject("ex-2"))
    a.shutdown()
    b = make(tmp_path, max_examples=2)
    assert b.open_count == 0  # ex-2 stayed out of the replayed open batch
    b.feed([sft(0), sft(2)])  # both blocked
    assert b.open_count == 0
    [m] = b.feed([sft(3), sft(4)])
    assert [r["id"] for r in m["revoked"]] == ["ex-0"] and m["revoked"][0]["batch_id"] == first["batch_id"]
    assert [r["id"] for r in m["overrides"]["removed_from_open"]] == ["ex-2"]


def test_a_crash_between_logging_a_reject_and_dropping_the_example_drops_it_on_restart(tmp_path):
    a = make(tmp_path, max_examples=10)
    a.feed([sft(0), sft(1)])
    a.flush()
    a.drop_open = lambda ex_id: 0  # the process dies right after the log line: memory never changed
    a.apply_override(reject("ex-1"))
    a.shutdown()
    b = make(tmp_path, max_examples=10)
    assert [e["id"] for e in b.open_envelopes()] == ["ex-0"]
