"""The roles of `sieve run` measured: stage 1 scale-out, the decider alone, and end to end against `--role all`.

    .venv/bin/python bench/bench_roles.py --out docs/bench_roles.md

Three parts, all in one run (so the ratios compare like with like on this shared machine):

1. **Stage 1, two scorers against one** (issue 12: target >= 1.7x). The score half of the
   default pipeline with the CPU encoder (`Stage1`, what `--role score` runs per batch), one
   torch thread per process, over the first ``--stage1-records`` dev instruction rows: one
   process does all of them, then two processes do half each at the same time (model loading
   excluded: both wait at a barrier). No broker: the encoder is >95% of a scorer's time.
2. **The decider alone, stage 1 precomputed** (target >= 2,000 examples/s at 100k stored).
   A decide pipeline (exact, near, quality gate, semantic, pair margin: every dedup kind on)
   is filled with ``--decider-stored`` accepted examples (real dev rows, then variants of
   them with a few words changed; unit embeddings at random, as float16 values), then decides
   ``--decider-queries`` scored records, as `--role decide` does per batch of 256: decode
   the record (`decode_scored`), `Pipeline.process_examples`, encode each envelope with its
   state features. Queries: new variants, exact copies and semantic near-copies of stored
   examples. The scored record's size is measured too. Default semantic settings, and the
   IVF settings docs/scaling.md recommends.
3. **End to end through a real broker**: `--role all` against one scorer plus one decider,
   and two scorers plus one decider, with the models off (``--e2e-records``) and on
   (``--e2e-model-records``, CPU encoder). The clock runs from every process being up (the
   decider owning the scored partition) to the output topics holding one committed envelope
   per input.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

FILES = ["gpteacher_codegen", "gpteacher_roleplay", "gsm8k_train_slice", "alpaca_5000", "alpagasus_random_9k",
         "alpagasus_dolly_3k", "gpteacher_toolformer_dedupe_only"]
DIM = 384


def load_lines(data: Path, n: int | None = None) -> list[bytes]:
    lines: list[bytes] = []
    for name in FILES:
        lines += [x for x in (data / "instruction" / f"{name}.jsonl").read_bytes().splitlines() if x.strip()]
    return lines[:n] if n else lines


# ----------------------------------------------------------------------------------------- stage 1


def _stage1_child(lines: list[bytes], ready, go, out) -> None:
    import torch

    torch.set_num_threads(1)
    from quality.records import RawRecord
    from streams.assemble import build_pipeline
    from streams.config import load_settings
    from streams.worker.loop import Stage1

    settings = load_settings(overrides={"pipeline.scoring.device": "cpu"})
    stage1 = Stage1(build_pipeline(settings.pipeline))
    stage1.process([RawRecord(lines[0], {"file": "warm", "line": 0})])  # load weights, warm kernels
    ready.wait()
    go.wait()
    t0 = time.perf_counter()
    for i in range(0, len(lines), 64):
        stage1.process([RawRecord(x, {"file": "bench", "line": i + j}) for j, x in enumerate(lines[i:i + 64])])
    out.put(time.perf_counter() - t0)


def stage1_scale(lines: list[bytes]) -> dict:
    ctx = mp.get_context("spawn")
    results = {}
    for procs in (1, 2):
        ready, go, out = ctx.Barrier(procs + 1), ctx.Event(), ctx.Queue()
        parts = [lines[i::procs] for i in range(procs)]
        children = [ctx.Process(target=_stage1_child, args=(part, ready, go, out)) for part in parts]
        for c in children:
            c.start()
        ready.wait()
        t0 = time.perf_counter()
        go.set()
        seconds = [out.get(timeout=1800) for _ in children]
        wall = time.perf_counter() - t0
        for c in children:
            c.join()
        results[procs] = {"seconds": max(seconds), "wall": wall, "per_process": seconds,
                          "examples_per_s": len(lines) / max(seconds)}
        print(f"stage 1, {procs} process(es): {results[procs]['examples_per_s']:.1f} examples/s", flush=True)
    results["ratio"] = results[2]["examples_per_s"] / results[1]["examples_per_s"]
    results["records"] = len(lines)
    return results


# ----------------------------------------------------------------------------------------- decider


def _variant(obj: dict, rng, k: int) -> dict:
    """``obj`` with ``k`` words of its output replaced by random ones (a different content)."""
    out = dict(obj)
    words = str(out.get("output", "")).split() or ["empty"]
    for _ in range(k):
        words[int(rng.integers(len(words)))] = f"w{int(rng.integers(1 << 30)):x}"
    out["output"] = " ".join(words)
    out["id"] = f"{obj.get('id', 'row')}-v{int(rng.integers(1 << 40)):x}"
    return out


def _unit(rng, n: int):
    import numpy as np

    from quality.features import half_precision

    v = rng.normal(size=(n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.stack([half_precision(x) for x in v])


def decider_alone(lines: list[bytes], stored: int, queries: int, semantic: dict) -> dict:
    import numpy as np
    import orjson

    from quality.envelope import Decision, encode_output
    from quality.features import half_precision
    from quality.normalize import normalize_example
    from quality.records import Example, RawRecord, parse
    from streams.config import load_settings
    from streams.recovery.envelopes import state_features
    from streams.roles.run_decider import decide_pipeline_factory
    from streams.roles.scored import decode_scored, encode_scored

    rng = np.random.default_rng(11)
    overrides = {f"pipeline.semantic_dedup.{k}": v for k, v in semantic.items()}
    settings = load_settings(overrides=overrides)
    pipeline = decide_pipeline_factory(settings)()
    rows = [orjson.loads(x) for x in lines]

    def example(obj: dict, i: int) -> Example:
        parsed = parse(RawRecord(orjson.dumps(obj), {"topic": "bench.raw", "partition": 0, "offset": i}))
        return normalize_example(parsed)

    t0 = time.perf_counter()
    store: list[Example] = []
    vecs = _unit(rng, stored)
    for i in range(stored):
        obj = rows[i] if i < len(rows) else _variant(rows[i % len(rows)], rng, 6)
        ex = example(obj, i)
        if isinstance(ex, Example):
            ex.features.embedding = vecs[i]
            store.append(ex)
    for i in range(0, len(store), 4096):
        pipeline.warm(store[i:i + 4096])
    fill_s = time.perf_counter() - t0
    sizes = {s.name: s.size() for s in pipeline.stateful}

    # queries: 10% exact copies (new ids), 10% new content whose embedding nearly copies a stored
    # one (cosine ~0.97: a semantic duplicate), 80% new content
    records = []
    for q in range(queries):
        base = store[int(rng.integers(len(store)))]
        kind = q % 10
        obj = {"instruction": base.prompt_text, "output": base.response_text, "id": f"q{q}"}
        if kind >= 1:  # new content: the words of a stored response shuffled, plus a few new ones
            words = base.response_text.split() + [f"n{int(rng.integers(1 << 30)):x}" for _ in range(5)]
            rng.shuffle(words)
            obj["output"] = " ".join(words)
        ex = example(obj, stored + q)
        if kind == 1:  # same embedding direction, nearly: cosine ~0.97
            noise = rng.normal(size=DIM).astype(np.float32) * 0.012
            v = base.features.embedding + noise
            ex.features.embedding = half_precision(v / np.linalg.norm(v))
        else:
            ex.features.embedding = _unit(rng, 1)[0]
        ex.features.quality = float(rng.uniform(0.05, 1.0))
        for stage in pipeline.stages:
            stage.annotate([ex])
        d = Decision(ex.id, "accepted", [], {"quality": ex.features.quality}, ex.origin, example=ex)
        records.append(encode_scored(d, pipeline.versions(), 1_000_000))
    sizes_b = [len(r) for r in records]
    versions = pipeline.versions()
    decided: dict[str, int] = {}
    cpu0, t1 = time.process_time(), time.perf_counter()
    out_bytes = 0
    for i in range(0, len(records), 256):
        chunk = [decode_scored(r, {"topic": "bench.scored", "partition": 0, "offset": i + j})
                 for j, r in enumerate(records[i:i + 256])]
        decisions = pipeline.process_examples([(sr.example, sr.scores, sr.details) for sr in chunk])
        for d in decisions:
            kind, value = encode_output(d, versions, 1_000_000, extra=state_features(d))
            out_bytes += len(value)
            decided[d.reasons[0] if d.reasons else d.decision] = decided.get(
                d.reasons[0] if d.reasons else d.decision, 0) + 1
    wall = time.perf_counter() - t1
    cpu = time.process_time() - cpu0
    index = next(s for s in pipeline.stages if s.name == "semantic_dedup").index
    kind = index.kind() if callable(getattr(index, "kind", None)) else getattr(index, "kind", "?")
    return {"stored": stored, "queries": queries, "semantic": semantic, "index": str(kind), "fill_s": fill_s,
            "sizes": sizes, "wall_s": wall, "cpu_s": cpu, "examples_per_s": queries / wall,
            "examples_per_cpu_s": queries / cpu, "decided": decided,
            "scored_bytes_mean": sum(sizes_b) / len(sizes_b), "accepted_envelope_bytes_mean": out_bytes / queries}


# ----------------------------------------------------------------------------------------- end to end


def end_to_end(bootstrap: str, lines: list[bytes], topology: str, models: bool, tmp: Path) -> dict:
    from stream_utils import Names, WorkerProcess, create_topics, output_count, produce

    names = Names(f"bench-{uuid.uuid4().hex}", f"bench-group-{uuid.uuid4().hex}")
    create_topics(names, bootstrap, partitions=2)
    env = {**names.env(bootstrap, 2), "SIEVE_PIPELINE__MAX_MESSAGE_BYTES": str(1 << 20),
           "SIEVE_KAFKA__BATCH_MAX": "256", "SIEVE_KAFKA__BATCH_WITHIN_S": "0.5",
           "SIEVE_KAFKA__COMMIT_INTERVAL_S": "2.8",
           "OMP_NUM_THREADS": "1" if topology != "all" else "2"}
    if models:
        env.update({"SIEVE_PIPELINE__SCORING__ENABLED": "true", "SIEVE_PIPELINE__SEMANTIC_DEDUP__ENABLED": "true",
                    "SIEVE_PIPELINE__SCORING__DEVICE": "cpu"})
    roles = {"all": ["all"], "1 scorer + decider": ["decide", "score"],
             "2 scorers + decider": ["decide", "score", "score"]}[topology]
    procs = [WorkerProcess(env, tmp / f"{names.base}-{i}-{r}.log", tmp, role=r) for i, r in enumerate(roles)]
    try:
        for p in procs:
            p.wait_ready(timeout=300)
        produce(bootstrap, f"{names.base}.raw", lines)
        t0 = time.perf_counter()
        while output_count(bootstrap, names.outputs) < len(lines):
            for p in procs:
                if p.proc.poll() is not None:
                    raise RuntimeError(f"{p.log_path} exited:\n{p.log()[-3000:]}")
            if time.perf_counter() - t0 > 1200:
                raise TimeoutError(f"{topology} took over 1200 s")
            time.sleep(0.25)
        seconds = time.perf_counter() - t0
        for p in procs:
            p.terminate()
    finally:
        for p in procs:
            p.kill()
    return {"topology": topology, "models": models, "records": len(lines), "seconds": seconds,
            "examples_per_s": len(lines) / seconds}


# ----------------------------------------------------------------------------------------- report


def render(r: dict) -> str:
    s1, e2e = r["stage1"], r["e2e"]
    lines = [
        "# Roles: stage 1 scale-out, the decider alone, end to end",
        "",
        f"Generated by `bench/bench_roles.py` on {r['when']} ({r['cpus']} CPUs shared with other work, "
        f"{r['python']}). One run: the ratios compare figures of the same run. Rerun: "
        "`.venv/bin/python bench/bench_roles.py --out docs/bench_roles.md`.",
        "",
        "## Stage 1: two scorers against one (CPU encoder, one torch thread per process)",
        "",
        f"{s1['records']} dev instruction rows through `Stage1` (the score half of the default pipeline: "
        "heuristics, PII, decontamination, content hash, MinHash signature, encoder and heads), in "
        "batches of 64, model loading excluded.",
        "",
        "| scorers | seconds (slowest process) | examples/s | ratio |",
        "|---:|---:|---:|---:|",
        f"| 1 | {s1[1]['seconds']:.1f} | {s1[1]['examples_per_s']:.1f} | 1.00 |",
        f"| 2 | {s1[2]['seconds']:.1f} | {s1[2]['examples_per_s']:.1f} | **{s1['ratio']:.2f}** |",
        "",
        "## The decider alone, stage 1 precomputed",
        "",
        "| stored | semantic settings | FAISS index | examples/s (wall) | examples/s (CPU) | scored record, bytes | "
        "accepted envelope, bytes | decisions |",
        "|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for d in r["decider"]:
        sem = ", ".join(f"{k}={v}" for k, v in d["semantic"].items()) or "defaults"
        decided = ", ".join(f"{k} {v}" for k, v in sorted(d["decided"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {d['stored']:,} | {sem} | {d['index']} | **{d['examples_per_s']:,.0f}** | "
                     f"{d['examples_per_cpu_s']:,.0f} | {d['scored_bytes_mean']:,.0f} | "
                     f"{d['accepted_envelope_bytes_mean']:,.0f} | {decided} |")
    lines += [
        "",
        "Per query: decode the scored record, the decide stages (exact, near, quality gate, semantic, "
        "pair margin) with the in-batch rechecks, and the envelope with its state features; batches of "
        "256, one thread. Stored: real dev rows, then variants with six words changed; embeddings at "
        "random (unit, float16 values); the fill (exact keys, MinHash signatures, FAISS) is not timed: "
        + ", ".join(f"{d['fill_s']:.0f} s" for d in r["decider"]) + ".",
        "",
        "## End to end through a real broker",
        "",
        "| models | topology | inputs | seconds | examples/s | vs `all` |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for models in (False, True):
        rows = [x for x in e2e if x["models"] == models]
        base = next((x for x in rows if x["topology"] == "all"), None)
        for x in rows:
            ratio = x["examples_per_s"] / base["examples_per_s"] if base else float("nan")
            lines.append(f"| {'on (CPU encoder)' if models else 'off'} | {x['topology']} | {x['records']} | "
                         f"{x['seconds']:.1f} | {x['examples_per_s']:.1f} | {ratio:.2f}x |")
    lines += ["", "Raw figures: `" + json.dumps({"stage1_ratio": round(s1["ratio"], 3)}) + "`", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--stage1-records", type=int, default=256)
    ap.add_argument("--decider-stored", type=int, default=100_000)
    ap.add_argument("--decider-queries", type=int, default=3000)
    ap.add_argument("--e2e-records", type=int, default=3000)
    ap.add_argument("--e2e-model-records", type=int, default=200)
    ap.add_argument("--skip", nargs="*", default=[], choices=["stage1", "decider", "e2e"])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    args = ap.parse_args()
    if not args.data.is_dir():
        args.data = Path("/work/shared/data")
    lines = load_lines(args.data)
    r: dict = {"when": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "python": platform.python_version(),
               "stage1": {}, "decider": [], "e2e": []}
    if "stage1" not in args.skip:
        r["stage1"] = stage1_scale(lines[:args.stage1_records])
    if "decider" not in args.skip:
        for semantic in ({}, {"ivf_min": 50_000, "ivf_nlist": 1024}):
            d = decider_alone(lines, args.decider_stored, args.decider_queries, semantic)
            print(f"decider at {d['stored']:,} stored ({d['index']}): {d['examples_per_s']:,.0f} examples/s; "
                  f"scored record {d['scored_bytes_mean']:,.0f} B", flush=True)
            r["decider"].append(d)
    if "e2e" not in args.skip:
        from streams.local_kafka import LocalKafka

        with tempfile.TemporaryDirectory() as tmpdir, LocalKafka(num_partitions=1) as broker:
            for models, n in ((False, args.e2e_records), (True, args.e2e_model_records)):
                for topology in ("all", "1 scorer + decider", "2 scorers + decider"):
                    x = end_to_end(broker.bootstrap, lines[:n], topology, models, Path(tmpdir))
                    print(f"e2e models={models} {topology}: {x['examples_per_s']:.1f} examples/s", flush=True)
                    r["e2e"].append(x)
    if args.json:
        args.json.write_text(json.dumps(r, indent=1, default=str))
    if args.out and r["stage1"] and r["decider"] and r["e2e"]:
        args.out.write_text(render(r))


if __name__ == "__main__":
    main()
