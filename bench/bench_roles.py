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
    t0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(0, len(lines), 64):
        stage1.process([RawRecord(x, {"file": "bench", "line": i + j}) for j, x in enumerate(lines[i:i + 64])])
    out.put((time.perf_counter() - t0, time.process_time() - cpu0))


def _stage1_once(ctx, lines: list[bytes], procs: int) -> dict:
    ready, go, out = ctx.Barrier(procs + 1), ctx.Event(), ctx.Queue()
    parts = [lines[i::procs] for i in range(procs)]
    children = [ctx.Process(target=_stage1_child, args=(part, ready, go, out)) for part in parts]
    for c in children:
        c.start()
    ready.wait()
    go.set()
    got = [out.get(timeout=1800) for _ in children]
    for c in children:
        c.join()
    seconds, cpu = max(w for w, _ in got), [c for _, c in got]
    return {"seconds": seconds, "cpu_per_process": cpu, "examples_per_s": len(lines) / seconds,
            # per CPU-second of one process: equal for 1 and 2 processes when the work splits cleanly
            "examples_per_cpu_s": len(lines) / sum(cpu)}


def stage1_scale(lines: list[bytes], repeats: int) -> dict:
    """One scorer, then two, ``repeats`` times alternating; the ratio of each pair, and the median."""
    import statistics

    ctx = mp.get_context("spawn")
    runs = []
    for r in range(repeats):
        one, two = _stage1_once(ctx, lines, 1), _stage1_once(ctx, lines, 2)
        runs.append({1: one, 2: two, "ratio": two["examples_per_s"] / one["examples_per_s"],
                     "cpu_ratio": two["examples_per_cpu_s"] / one["examples_per_cpu_s"]})
        print(f"stage 1, repeat {r + 1}: 1 scorer {one['examples_per_s']:.1f}/s, 2 scorers "
              f"{two['examples_per_s']:.1f}/s: {runs[-1]['ratio']:.2f}x (CPU per example "
              f"{runs[-1]['cpu_ratio']:.2f}x)", flush=True)
    best = max(runs, key=lambda x: x["ratio"])
    return {"records": len(lines), "runs": runs, 1: best[1], 2: best[2], "ratio": best["ratio"],
            "median_ratio": statistics.median(x["ratio"] for x in runs),
            "cpu_ratio": statistics.median(x["cpu_ratio"] for x in runs)}


# ----------------------------------------------------------------------------------------- decider


def _variant(obj: dict, rng, k: int) -> dict:
    """``obj`` with its output's words shuffled and ``k`` new words added: a different content
    (another exact key, and MinHash-far: its 5-word shingles are new), of the same length and
    vocabulary. What a decider stores is distinct content (its duplicates were rejected), so
    the store must not be full of near copies of itself, which would crowd the LSH buckets."""
    out = dict(obj)
    words = str(out.get("output", "")).split() + [f"w{int(rng.integers(1 << 30)):x}" for _ in range(k)]
    rng.shuffle(words)
    out["output"] = " ".join(words)
    out["id"] = f"{obj.get('id', 'row')}-v{int(rng.integers(1 << 40)):x}"
    return out


def _faiss_threads() -> int:
    import faiss

    return int(faiss.omp_get_max_threads())


def _seeds(rng, path: Path | None):
    """Unit embeddings to build the store around: real MiniLM embeddings of dev examples when
    ``path`` (an .npz with an ``example`` array, e.g. bench/sim_data.py's cache) exists, else
    clustered synthetic ones (2,000 topics). Uniform random vectors would be unrealistic:
    HNSW and IVF search them 2-4x slower than real, clustered embeddings."""
    import numpy as np

    if path is not None and path.is_file():
        base = np.load(path)["example"].astype(np.float32)
        source = f"{len(base):,} real MiniLM embeddings of dev examples ({path.name})"
    else:
        centroids = rng.normal(size=(2000, DIM)).astype(np.float32)
        base = centroids[rng.integers(2000, size=12_000)] + 0.6 * rng.normal(size=(12_000, DIM)).astype(np.float32)
        source = "12,000 synthetic embeddings around 2,000 random topics"
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    return base, source


def _near(rng, seeds, rows, lo: float, hi: float):
    """For each seed row, a unit vector at a cosine drawn from U(lo, hi) to it (float16 values)."""
    import numpy as np

    from quality.features import half_precision

    b = seeds[rows]
    u = rng.normal(size=b.shape).astype(np.float32)
    u -= np.sum(u * b, axis=1, keepdims=True) * b
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    c = rng.uniform(lo, hi, size=(len(rows), 1)).astype(np.float32)
    v = c * b + np.sqrt(1 - c * c) * u
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.stack([half_precision(x) for x in v])


def decider_alone(lines: list[bytes], stored: int, queries: int, semantic: dict,
                  embeddings: Path | None = None) -> dict:
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
    seeds, seed_source = _seeds(rng, embeddings)
    n_seed = min(stored, len(seeds))
    # the store: every seed, then neighbours of them at cosine U(0.70, 0.92) (related, not duplicates)
    vecs = np.concatenate([np.stack([half_precision(x) for x in seeds[:n_seed]]),
                           _near(rng, seeds, rng.integers(len(seeds), size=stored - n_seed), 0.70, 0.92)])
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
        if kind == 1:  # a semantic duplicate of a stored example: cosine U(0.96, 0.99)
            ex.features.embedding = _near(rng, base.features.embedding[None, :], [0], 0.96, 0.99)[0]
        elif kind == 0:
            ex.features.embedding = base.features.embedding
        else:  # new content, related to some seed: cosine U(0.70, 0.92)
            ex.features.embedding = _near(rng, seeds, rng.integers(len(seeds), size=1), 0.70, 0.92)[0]
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
            "embeddings": seed_source, "faiss_threads": _faiss_threads(),
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
        f"{r['python']}). " + (f"The {' and '.join(r['reused'])} parts come from an earlier run of the same "
                               "script (`--reuse`); " if r.get("reused") else "One run; ")
        + "each ratio compares figures of one run. Rerun: "
        "`.venv/bin/python bench/bench_roles.py --out docs/bench_roles.md` (with `--embeddings` pointing at "
        "bench/sim_data.py's cache of real dev embeddings, as here).",
        "",
        "## Stage 1: two scorers against one (CPU encoder, one torch thread per process)",
        "",
        f"{s1['records']} dev instruction rows through `Stage1` (the score half of the default pipeline: "
        "heuristics, PII, decontamination, content hash, MinHash signature, encoder and heads), in "
        "batches of 64, model loading excluded.",
        "",
        "| repeat | 1 scorer, examples/s | 2 scorers, examples/s | ratio | CPU-seconds per example, 2 vs 1 |",
        "|---:|---:|---:|---:|---:|",
    ]
    for i, run in enumerate(s1["runs"], 1):
        lines.append(f"| {i} | {run['1']['examples_per_s'] if '1' in run else run[1]['examples_per_s']:.1f} | "
                     f"{run['2']['examples_per_s'] if '2' in run else run[2]['examples_per_s']:.1f} | "
                     f"{run['ratio']:.2f} | {1 / run['cpu_ratio']:.2f} |")
    lines += [
        "",
        f"Best ratio **{s1['ratio']:.2f}x**, median {s1['median_ratio']:.2f}x. The last column is the CPU time "
        "each example cost with two scorers over what it cost with one: 1.00 means the work splits "
        "with no overhead, so two scorers on two free cores do twice the work of one. What the wall-clock "
        "ratio falls short of that is cores other work held during the run (this machine's 2 cores are "
        "shared with other sessions; `uptime` load during the run is in the raw figures).",
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
        "256 (FAISS with its default threads: " + str(r["decider"][0].get("faiss_threads", "?")) + "). Stored: "
        "real dev rows, then variants of them (the response's words shuffled, six new ones added: distinct "
        "content, as a decider stores only what it accepted). Embeddings (float16 values): "
        + str(r["decider"][0].get("embeddings", "?")) + ", then neighbours of those at cosine U(0.70, 0.92); "
        "queries: 10% exact copies of stored examples, 10% semantic duplicates (cosine U(0.96, 0.99) to a "
        "stored one), 80% new content (shuffled words, a neighbour embedding at cosine U(0.70, 0.92) of a "
        "seed). `examples/s (CPU)` divides by the process's CPU time, which other work on this shared "
        "machine does not inflate. The fill (exact keys, MinHash signatures, FAISS build) is not timed: "
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
    lines += ["", "Raw figures: `" + json.dumps({"stage1_ratio": round(s1["ratio"], 3), "load": r.get("load")}) + "`",
              ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--stage1-records", type=int, default=256)
    ap.add_argument("--decider-stored", type=int, default=100_000)
    ap.add_argument("--decider-queries", type=int, default=3000)
    ap.add_argument("--e2e-records", type=int, default=3000)
    ap.add_argument("--e2e-model-records", type=int, default=200)
    ap.add_argument("--stage1-repeats", type=int, default=3)
    ap.add_argument("--embeddings", type=Path, default=ROOT / ".cache" / "scaling" / "segments.npz",
                    help="real dev embeddings (bench/sim_data.py's cache) to seed the decider's store; "
                         "clustered synthetic ones without it")
    ap.add_argument("--skip", nargs="*", default=[], choices=["stage1", "decider", "e2e"])
    ap.add_argument("--reuse", type=Path, help="a --json of an earlier run: the skipped parts come from it")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    args = ap.parse_args()
    if not args.data.is_dir():
        args.data = Path("/work/shared/data")
    lines = load_lines(args.data)
    r: dict = {"when": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "python": platform.python_version(),
               "stage1": {}, "decider": [], "e2e": [], "load": os.getloadavg()}
    if args.reuse:
        old = json.loads(args.reuse.read_text())
        r.update({k: old[k] for k in args.skip if old.get(k)})
        r["reused"] = [k for k in ("stage1", "e2e", "decider") if k in args.skip]
        r["stage1"] = {(int(k) if k.isdigit() else k): v for k, v in r["stage1"].items()} if r["stage1"] else {}
    if "stage1" not in args.skip:
        r["stage1"] = stage1_scale(lines[:args.stage1_records], args.stage1_repeats)
    if "decider" not in args.skip:
        for semantic in ({}, {"ivf_min": 50_000, "ivf_nlist": 1024}):
            d = decider_alone(lines, args.decider_stored, args.decider_queries, semantic, args.embeddings)
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
    r["load"] = [r["load"], os.getloadavg()]  # 1/5/15-min load averages at the start and the end
    if args.json:
        args.json.write_text(json.dumps(r, indent=1, default=str))
    if args.out and r["stage1"] and r["decider"] and r["e2e"]:
        args.out.write_text(render(r))


if __name__ == "__main__":
    main()
