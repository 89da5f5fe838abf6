"""Rebuild ``sample.jsonl`` (the demo's input) and ``tests/data/stream_slice.jsonl`` from /work/shared/data.

Only MIT-licensed sources are read (GPTeacher codegen/roleplay/toolformer, the GSM8K
train slice, hh-rlhf). Rows are picked by a keyed hash of their id, so a rebuild
picks the same rows; some are converted to OpenAI ``messages`` or ShareGPT
``conversations``. The demo sample also gets exact duplicates under new ids and a
few bad lines of each kind (see README.md). Run from the repository root:

    python streams/demo_data/make_sample.py /work/shared/data
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS_DATA = HERE.parents[1] / "tests" / "data"

# (file, how many for the demo, how many for the tests slice, output format)
PLAN = [
    ("instruction/gpteacher_codegen.jsonl", 70, 60, "alpaca"),
    ("instruction/gpteacher_roleplay.jsonl", 45, 40, "openai"),
    ("instruction/gpteacher_toolformer_dedupe_only.jsonl", 40, 40, "sharegpt"),
    ("instruction/gsm8k_train_slice.jsonl", 40, 40, "alpaca"),
    ("preference/hh_rlhf_harmless_base_test.jsonl", 25, 30, "preference"),
    ("preference/hh_rlhf_helpful_base_test.jsonl", 25, 30, "preference"),
]


def _rank(key: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()


def _convert(row: dict, fmt: str) -> dict:
    base = {"id": row["id"], "source": row["source"]}
    if fmt in ("alpaca", "preference"):
        return row
    prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input", "").strip() else "")
    if fmt == "openai":
        return {**base, "messages": [{"role": "user", "content": prompt},
                                     {"role": "assistant", "content": row["output"]}]}
    return {**base, "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": row["output"]}]}


def pick(data: Path, salt: str, column: int) -> list[dict]:
    """Rows of every planned source, chosen by hash rank, in their output format."""
    out = []
    for rel, *counts, fmt in PLAN:
        rows = [json.loads(line) for line in (data / rel).read_text().splitlines() if line.strip()]
        rows.sort(key=lambda r: _rank(r["id"], salt))
        out += [_convert(r, fmt) for r in rows[: counts[column]]]
    return out


def bad_lines(good: list[dict]) -> list[bytes]:
    """Lines that must become dead letters or rejections, built from real rows."""
    alp = [r for r in good if "instruction" in r][:8]
    dumps = lambda o: json.dumps(o, ensure_ascii=False).encode()  # noqa: E731
    lines = [
        dumps(alp[0])[:-25],                                                   # invalid_json: cut short
        b'{"instruction": "Summarize this text", "output": "A summary." ',      # invalid_json: unclosed
        dumps([alp[1]["instruction"], alp[1]["output"]]),                        # not_an_object: an array
        dumps("Write a haiku about autumn."),                                    # not_an_object: a string
        dumps({"id": "bad-missing-output", "instruction": alp[2]["instruction"]}),          # schema_error
        dumps({"id": "bad-wrong-type", "instruction": alp[3]["instruction"], "output": 42}),  # schema_error
        dumps({"id": "bad-unknown-format", "text": alp[4]["output"]}),                       # unknown_format
        dumps({"id": "bad-unknown-format-2", "question": alp[5]["instruction"], "answer": "yes"}),
        dumps({"id": "bad-empty-output", "instruction": alp[6]["instruction"], "input": "", "output": ""}),
        dumps({"id": "bad-refusal", "instruction": alp[7]["instruction"], "input": "",
               "output": "As an AI language model, I cannot help with that request."}),
        dumps({"id": "bad-refusal-2", "messages": [
            {"role": "user", "content": alp[0]["instruction"]},
            {"role": "assistant", "content": "I'm sorry, but as an AI language model I am not able to do that."}]}),
        b'{"id": "bad-utf8", "instruction": "Translate to French", "output": "caf\xe9 cr\xe8me \xff"}',  # invalid_utf8
        b"\xff\xfe\x00{not even json}",                                                                # invalid_utf8
    ]
    return lines


def main(data: Path) -> None:
    rng = random.Random(20240611)
    demo = pick(data, "sieve-demo", 0)
    dups = []
    for i, row in enumerate(rng.sample(demo, 12)):  # same content, new id; some in another format
        copy = dict(row, id=f"{row['id']}-dup")
        if i % 3 == 0 and "instruction" in copy:
            copy = _convert(copy, "openai")  # same canonical content as the Alpaca original
        dups.append(copy)
    rng.shuffle(demo)  # mix formats and sources as a live stream would
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in demo]
    for copy in dups:  # somewhere after its original
        original = json.dumps(next(r for r in demo if r["id"] == copy["id"][:-4]), ensure_ascii=False).encode()
        lines.insert(rng.randrange(lines.index(original) + 1, len(lines) + 1),
                     json.dumps(copy, ensure_ascii=False).encode())
    for line in bad_lines(demo):
        lines.insert(rng.randrange(len(lines) + 1), line)
    (HERE / "sample.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    slice_rows = pick(data, "sieve-tests", 1)
    TESTS_DATA.mkdir(parents=True, exist_ok=True)
    (TESTS_DATA / "stream_slice.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in slice_rows))
    print(f"sample.jsonl: {len(lines)} lines; tests/data/stream_slice.jsonl: {len(slice_rows)} rows")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data"))
