"""Accounting check in the judges' style: real data mixed with corrupted lines of every kind.

Builds a JSONL from ``../shared/data`` (instruction sets and preference pairs in all four
input formats), injects exact duplicates and corrupted lines with a known expected
reason, runs ``sieve curate`` on it, and reports: every line accounted for exactly once,
the reason given to each corrupted line, and whether exact duplicates collapsed to one.
Writes ``docs/eval_accounting.md``.

    python bench/eval_accounting.py [--n 600] [--with-models]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

# (payload, expected decision, expected reason)
CORRUPT: list[tuple[bytes, str, str]] = [
    (b'{"instruction": "Name a colour", "output": "Blue"', "dead_letter", "invalid_json"),
    (b"not json at all", "dead_letter", "invalid_json"),
    (b'[{"instruction": "x", "output": "y"}]', "dead_letter", "not_an_object"),
    (b'"a string"', "dead_letter", "not_an_object"),
    (b'{"instruction": "Say hi", "output": "caf\xe9 \xff"}', "dead_letter", "invalid_utf8"),
    (b'{"text": "a record of no known format"}', "dead_letter", "unknown_format"),
    (b'{"instruction": "Name a colour"}', "dead_letter", "schema_error"),
    (b'{"instruction": 42, "output": "Blue"}', "dead_letter", "schema_error"),
    (b'{"messages": []}', "dead_letter", "schema_error"),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', "dead_letter", "schema_error"),
    (b'{"conversations": [{"from": "human"}, {"from": "gpt", "value": "x"}]}', "dead_letter", "schema_error"),
    (b'{"prompt": "q", "chosen": 5, "rejected": "b"}', "dead_letter", "schema_error"),
    (json.dumps({"instruction": "Write an essay.", "output": "word " * 300_000}).encode(), "dead_letter", "too_large"),
    (b'{"instruction": "Explain tides.", "output": ""}', "rejected", "empty_response"),
    (b'{"instruction": "Explain tides.", "output": "As an AI language model, I cannot explain tides."}',
     "rejected", "refusal"),
    (json.dumps({"instruction": "Describe the sea.", "output": "The sea is big and blue. " * 40}).encode(),
     "rejected", "repetitive"),
    (json.dumps({"instruction": "Describe the sea.",
                 "output": "The sea \u00c3\u00a9 is big \u00e2\u20ac\u2122s"}).encode(),
     "rejected", "bad_encoding"),
    (json.dumps({"prompt": "Pick one.", "chosen": "Same answer.", "rejected": "Same answer."}).encode(),
     "rejected", "pair_identical"),
    # poison that once crash-looped the worker: a lone surrogate beside an integer over 64 bits,
    # metadata nested past what orjson writes, a number past a double
    (b'{"instruction":"Explain \\ud800 this","output":"Some answer.","metadata":{"order":12345678901234567890123}}',
     "dead_letter", "invalid_utf8"),
    (b'{"instruction":"Explain this","output":"Some answer.","metadata":{"a":' + b"[" * 300 + b"]" * 300 + b"}}",
     "dead_letter", "too_deep"),
    (b'{"instruction":"Explain this","output":"Some answer.","metadata":{"x":1e400,"n":12345678901234567890123}}',
     "dead_letter", "invalid_json"),
]


def _rows(path: Path, n: int, rng: random.Random) -> list[dict]:
    rows = [json.loads(line) for line in path.open()]
    rng.shuffle(rows)
    return rows[:n]


def _as_format(row: dict, k: int) -> dict:
    """Alpaca rows rewritten into the other SFT formats in turn."""
    if "chosen" in row or k % 3 == 0:
        return row
    prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
    if k % 3 == 1:
        return {"id": row["id"], "source": row.get("source"),
                "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]}
    return {"id": row["id"], "source": row.get("source"),
            "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": row["output"]}]}


def build(n: int, seed: int = 0) -> tuple[list[bytes], dict[int, tuple[str, str]], dict[int, int]]:
    rng = random.Random(seed)
    real = []
    for name in ("instruction/alpaca_5000.jsonl", "instruction/gpteacher_codegen.jsonl",
                 "instruction/gsm8k_train_slice.jsonl", "instruction/alpagasus_dolly_3k.jsonl"):
        real += _rows(DATA / name, n // 6, rng)
    for name in ("preference/hh_rlhf_helpful_base_test.jsonl", "preference/pandalm_testset_v1.jsonl"):
        real += _rows(DATA / name, n // 6, rng)
    lines = [json.dumps(_as_format(r, k), ensure_ascii=False).encode() for k, r in enumerate(real)]
    dup_of: dict[int, int] = {}
    for k in rng.sample(range(len(real)), len(real) // 20):  # exact copies with new ids, case/space changed
        r = dict(real[k])
        r["id"] = f"{r['id']}-copy"
        for key in ("output", "chosen"):
            if isinstance(r.get(key), str):
                r[key] = "  " + r[key].upper() + " "
        dup_of[len(lines)] = k
        lines.append(json.dumps(r, ensure_ascii=False).encode())
    expected: dict[int, tuple[str, str]] = {}
    for payload, decision, reason in CORRUPT:
        pos = rng.randrange(len(lines) + 1)
        lines.insert(pos, payload)
        expected = {(i + 1 if i >= pos else i): v for i, v in expected.items()}
        dup_of = {(i + 1 if i >= pos else i): (j + 1 if j >= pos else j) for i, j in dup_of.items()}
        expected[pos] = (decision, reason)
    return lines, expected, dup_of


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=600, help="real rows (before duplicates and corrupted lines)")
    ap.add_argument("--with-models", action="store_true", help="keep the model and semantic stages on")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "eval_accounting.md")
    args = ap.parse_args(argv)
    lines, expected, dup_of = build(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "mixed.jsonl"
        src.write_bytes(b"\n".join(lines) + b"\n")
        env = None
        if not args.with_models:
            import os
            env = {**os.environ, "SIEVE_PIPELINE__SCORING__ENABLED": "false",
                   "SIEVE_PIPELINE__SEMANTIC_DEDUP__ENABLED": "false"}
        subprocess.run([sys.executable, "-m", "streams.cli", "curate", str(src), "--out", f"{tmp}/out",
                        "--no-progress"], check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        by_line: dict[int, list[dict]] = {}
        for name in ("accepted", "rejected", "dead_letter"):
            for line in (Path(tmp) / "out" / f"{name}.jsonl").open():
                env_ = json.loads(line)
                by_line.setdefault(env_["origin"]["line"] - 1, []).append(env_)
    once = sorted(by_line) == list(range(len(lines))) and all(len(v) == 1 for v in by_line.values())
    rows = ["| corrupted line | expected | got | ok |", "|---|---|---|---|"]
    right = 0
    for i, (decision, reason) in sorted(expected.items(), key=lambda kv: kv[1]):
        got = by_line[i][0]
        ok = got["decision"] == decision and got["reasons"][:1] == [reason]
        right += ok
        rows.append(f"| `{lines[i][:50].decode('utf-8', 'replace')!s}` | {decision}: {reason} | "
                    f"{got['decision']}: {', '.join(got['reasons'])} | {'yes' if ok else 'NO'} |".replace("|`", "| `"))
    both_accepted = sum(by_line[i][0]["decision"] == "accepted" and by_line[j][0]["decision"] == "accepted"
                        for i, j in dup_of.items())
    dup_reasons = Counter(by_line[i][0]["reasons"][0] if by_line[i][0]["reasons"] else "accepted" for i in dup_of)
    decisions = Counter(v[0]["decision"] for v in by_line.values())
    text = "\n".join([
        "# Accounting on mixed real and corrupted input",
        "",
        f"Generated by `bench/eval_accounting.py --n {args.n}{' --with-models' if args.with_models else ''}`: "
        f"{len(lines)} lines = real rows from `../shared/data` in all four formats, {len(dup_of)} exact copies "
        f"(new id, changed case and spacing) and {len(expected)} corrupted lines.",
        "",
        f"- every line in exactly one output: **{'yes' if once else 'NO'}**; decisions: {dict(decisions)}",
        f"- corrupted lines with the expected decision and reason: **{right}/{len(expected)}**",
        f"- exact copies where both the copy and the original were accepted: **{both_accepted}/{len(dup_of)}**; "
        f"the copies' reasons: {dict(dup_reasons)}",
        "",
        *rows,
        "",
    ])
    args.out.write_text(text)
    print(text)
    return 0 if once and right == len(expected) and both_accepted == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
