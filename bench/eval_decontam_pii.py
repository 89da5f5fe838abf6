"""Decontamination that redaction and earlier rejections cannot hide: the figures of docs/eval_decontam.md.

Runs ``sieve curate`` (cheap stages, the dev benchmarks) and reads the envelopes:

1. **Copies of benchmark items with contact details.** Every item of
   ``../shared/data/benchmarks`` holding an e-mail address, phone number, IP address or
   URL, copied verbatim as the prompt of a training example, and again with its contact
   details swapped for others. The dev benchmarks hold only 9 such items (7 URLs, 2
   phones, no e-mail), so a second set plants an e-mail address or a phone number (or
   both) at a random word of 300 random items, in the benchmark file *and* the copy,
   as on benchmarks that carry contact details. Caught = the envelope is ``rejected``
   and carries ``contaminated``.
2. **Every contaminated dev row.** All instruction and preference files; each row of
   ``labels/contamination_labels.jsonl`` with ``contaminated: true`` should carry
   ``contaminated`` in its envelope whatever the deciding reason. Rows labelled clean
   that carry it are false positives.

``--before DIR`` also runs ``sieve curate`` from another checkout (its own ``quality``),
e.g. the commit before the change, for a "before" column:

    git archive <base commit> | tar -x -C /tmp/sieve-before
    python bench/eval_decontam_pii.py --before /tmp/sieve-before --out docs/eval_decontam.md
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from quality.privacy import DETECTORS, STRICT  # noqa: E402

URL = re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"]+")
ANSWER = "Here is a careful answer to the request above, written out in plain sentences for the reader."
PLANTED = [("email", "jane.doe{k}@example-mail.com"), ("phone", "+1 (415) 555-{k:04d}"),
           ("both", "jane.doe{k}@example-mail.com or +1 (415) 555-{k:04d}")]
OTHER = {"email": "someone.else@other-domain.org", "phone": "+44 20 7946 0958", "ip_address": "192.0.2.77",
         "credit_card": "4111 1111 1111 1111", "secret": "sk-abcdefghijklmnopqrstuvwxyz012345"}
CHEAP = {"SIEVE_PIPELINE__SCORING__ENABLED": "false", "SIEVE_PIPELINE__SEMANTIC_DEDUP__ENABLED": "false"}


def read_jsonl(path: Path) -> list[dict]:
    with open(path, "rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]


def contact_kinds(text: str) -> set[str]:
    kinds = set(STRICT.redact(text)[1])
    return kinds | ({"url"} if URL.search(text) else set())


def curate(code: Path, inputs: list[Path], benchmarks: Path, out: Path) -> dict[str, dict]:
    """Envelopes by id from ``sieve curate`` run out of ``code``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("SIEVE_")}
    subprocess.run([sys.executable, "-m", "streams.cli", "curate", *map(str, inputs), "--out", str(out),
                    "--benchmarks", str(benchmarks), "--no-progress"], check=True, cwd=code,
                   env={**env, **CHEAP, "PYTHONPATH": str(code)}, stdout=subprocess.DEVNULL)
    by_id: dict[str, dict] = {}
    for name in ("accepted", "rejected", "dead_letter"):
        for env_ in read_jsonl(out / f"{name}.jsonl"):
            by_id[env_["id"]] = env_
    return by_id


def swap(text: str) -> str:
    """``text`` with every contact detail the PII detectors find (and every URL) replaced by another one."""
    for kind, _, pattern, valid in DETECTORS:
        text = pattern.sub(lambda m, kind=kind, valid=valid: m.group(0) if valid is not None and not valid(m)
                           else OTHER[kind], text)
    return URL.sub("https://www.example.org/elsewhere", text)


def plant(text: str, contact: str, rng: random.Random) -> str:
    words = text.split(" ")
    at = rng.randrange(1, max(2, len(words)))
    return " ".join(words[:at] + [f"(contact: {contact})"] + words[at:])


def copies_section(code: Path, data: Path, tmp: Path, seed: int, planted_n: int) -> tuple[list[str], dict]:
    rng = random.Random(seed)
    bench_dir = tmp / "bench"
    bench_dir.mkdir()
    real, planted, rows = [], [], []
    for path in sorted((data / "benchmarks").glob("*.jsonl")):
        items = read_jsonl(path)
        for k in rng.sample(range(len(items)), min(len(items), planted_n // 9 + 1)):
            if len(planted) < planted_n and not contact_kinds(items[k]["text"]):
                kind, template = PLANTED[len(planted) % len(PLANTED)]
                items[k] = {**items[k], "text": plant(items[k]["text"], template.format(k=len(planted)), rng)}
                planted.append((items[k], kind))
        (bench_dir / path.name).write_bytes(b"".join(orjson.dumps(i) + b"\n" for i in items))
        real += [(i, ",".join(sorted(contact_kinds(i["text"])))) for i in items
                 if contact_kinds(i["text"]) and all(i is not p for p, _ in planted)]
    for group, items in (("real", real), ("planted", planted)):
        for item, kind in items:
            for how, text in (("verbatim", item["text"]), ("swapped", swap(item["text"]))):
                rows.append({"id": f"{group}:{how}:{item['id']}", "source": f"{group}/{kind}", "instruction": text,
                             "output": ANSWER})
    src = tmp / "copies.jsonl"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    out = curate(code, [src], bench_dir, tmp / "copies_out")
    table: Counter = Counter()
    for r in rows:
        group, how, _ = r["id"].split(":", 2)
        env = out[r["id"]]
        key = (group, r["source"].split("/", 1)[1], how)
        table[key + ("n",)] += 1
        table[key + ("caught",)] += env["decision"] == "rejected" and "contaminated" in env["reasons"]
    lines = ["| items | contact details | copy | copies | caught as contaminated |", "|---|---|---|---:|---:|"]
    totals: Counter = Counter()
    for group, kind, how in sorted({k[:3] for k in table}):
        n, caught = table[(group, kind, how, "n")], table[(group, kind, how, "caught")]
        totals[(group, how, "n")] += n
        totals[(group, how, "caught")] += caught
        lines.append(f"| {group} | {kind} | {how} | {n} | {caught} |")
    summary = {f"{g}_{h}": (totals[(g, h, "caught")], totals[(g, h, "n")]) for g, h, _ in totals}
    return lines, summary


def labelled_section(code: Path, data: Path, tmp: Path) -> tuple[list[str], dict]:
    inputs = sorted((data / "instruction").glob("*.jsonl")) + sorted((data / "preference").glob("*.jsonl"))
    out = curate(code, inputs, data / "benchmarks", tmp / "labelled_out")
    labels = {r["id"]: r for r in read_jsonl(data / "labels" / "contamination_labels.jsonl")}
    dev_items = {i["id"] for p in (data / "benchmarks").glob("*.jsonl") for i in read_jsonl(p)}
    positives = [r for r in labels.values() if r["contaminated"]]
    carried = [r for r in positives if "contaminated" in out[r["id"]]["reasons"]]
    reachable = [r for r in positives if any(m.get("benchmark_id") in dev_items for m in r.get("matches") or [])]
    deciding = Counter(out[r["id"]]["reasons"][0] if out[r["id"]]["reasons"] else "accepted" for r in positives)
    not_carried = Counter(out[r["id"]]["reasons"][0] if out[r["id"]]["reasons"] else "accepted"
                          for r in positives if r not in carried)
    by_level = Counter((r["contamination_level"], "contaminated" in out[r["id"]]["reasons"]) for r in positives)
    false_pos = sum("contaminated" in out[r["id"]]["reasons"] for r in labels.values() if not r["contaminated"])
    clean = sum(not r["contaminated"] for r in labels.values())
    lines = [f"- rows labelled contaminated: {len(positives)} ({len(reachable)} whose matched item is in the dev "
             "benchmarks; the labels were made against dev and held-out benchmarks together)",
             f"- envelopes carrying `contaminated`: **{len(carried)}/{len(positives)}**; deciding reason of the "
             f"labelled rows: {dict(deciding.most_common())}",
             f"- labelled rows not carrying it, by deciding reason: {dict(not_carried.most_common()) or 'none'}",
             f"- by level (level, carried): {dict(sorted(by_level.items()))}",
             f"- rows labelled clean carrying `contaminated` (false positives): {false_pos}/{clean}"]
    return lines, {"carried": (len(carried), len(positives)), "false_positives": (false_pos, clean)}


def run(code: Path, data: Path, planted: int, seed: int) -> tuple[list[str], dict]:
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        copies, copy_summary = copies_section(code, data, tmp, seed, planted)
        labelled, label_summary = labelled_section(code, data, tmp)
    body = ["#### Copies of benchmark items with contact details", "", *copies, "",
            "#### Every contaminated dev row", "", *labelled, ""]
    return body, {**copy_summary, **label_summary}


SUMMARY_ROWS = [
    ("real", "verbatim copies of the 9 dev items with contact details, caught"),
    ("real_swapped", "the same with their contact details swapped, caught"),
    ("planted_verbatim", "verbatim copies of items with a planted e-mail/phone, caught"),
    ("planted_swapped", "the same with the planted details swapped, caught"),
    ("carried", "contaminated dev rows whose envelope carries `contaminated`"),
    ("false_positives", "clean dev rows carrying `contaminated`"),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA, help="the shared dev data (default: ../shared/data)")
    ap.add_argument("--before", type=Path, default=None,
                    help="a checkout of the code before the change, run first for the 'before' column")
    ap.add_argument("--planted", type=int, default=300, help="benchmark items given planted contact details")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the markdown here (default: print only)")
    args = ap.parse_args(argv)
    data = args.data.resolve()
    if not (data / "benchmarks").is_dir():
        ap.error(f"no benchmarks under {data}; pass --data PATH/TO/shared/data")
    runs = [("before", args.before.resolve())] if args.before is not None else []
    runs.append(("after", ROOT))
    results = {name: run(code, data, args.planted, args.seed) for name, code in runs}
    head = "| | " + " | ".join(name for name, _ in runs) + " |"
    table = [head, "|---|" + "---:|" * len(runs)]
    for key, label in SUMMARY_ROWS:
        key = "real_verbatim" if key == "real" else key
        cells = [f"{results[name][1][key][0]:,}/{results[name][1][key][1]:,}" for name, _ in runs]
        table.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join([
        "# Decontamination against redaction and earlier rejections",
        "",
        f"Generated by `bench/eval_decontam_pii.py --planted {args.planted} --seed {args.seed}"
        f"{' --before <checkout>' if args.before else ''}` on `../shared/data` (dev): `sieve curate` with the "
        "cheap stages and `--benchmarks ../shared/data/benchmarks`. A copy is caught when its envelope is "
        "`rejected` and carries `contaminated`; a row carries it when `contaminated` is among its reasons "
        "(the deciding one first).",
        "",
        *table,
        "",
        *[line for name, _ in runs for line in (f"### {name}", "", *results[name][0])],
    ])
    if args.out is not None:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
