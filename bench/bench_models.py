"""Throughput of the model stage: encoder, heads, an HF reward model, and the stage in the pipeline.

    .venv/bin/python bench/bench_models.py                      # CPU figures into docs/models.md
    .venv/bin/python bench/bench_models.py --device cuda        # GPU (bf16) figures, bigger batches

Inputs are synthetic texts of exact token lengths (common one-token English words),
so examples/s and tokens/s are comparable across lengths. Each cell is the median of
``--reps`` timed runs after one warm-up. The HF reward model is a BERT-base-sized
``BertForSequenceClassification`` built from a config with random weights: the same
compute as a real BERT-base reward model or the FineWeb-Edu classifier (no weights
can be downloaded here). "Stream vs model" runs ``Pipeline.process`` with the model
stage on raw JSON batches and compares it with ``encode_segments`` + heads on the
same texts, interleaved in the same run, so that load from other processes hits both.

Anchor: the FineWeb-Edu classifier (BERT-base) scored 15T tokens in ~6,000 H100 hours,
~0.7M tokens/s per H100. Target: >= 1M tokens/s per H100 for MiniLM + head, bf16, 256 tokens.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ("the of and to in is was for on are with as his they be at one have this from or had by word but what "
         "some we can out other were all there when up use your how said an each she which do their time if will "
         "way about many then them write would like so these her long make thing see him two has look more day "
         "could go come did number sound no most people my over know water than call first who may down side been "
         "now find").split()


def texts_of(tokenizer, n: int, tokens: int, seed: int = 0) -> list[str]:
    """``n`` texts of exactly ``tokens`` tokens (special tokens excluded) for this tokenizer."""
    rng = np.random.default_rng(seed)
    vocab = [w for w in WORDS if len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1]
    return [" ".join(rng.choice(vocab, size=tokens)) for _ in range(n)]


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(fns, reps: int) -> list[float]:
    """Median time of each function, timed in turns so that background load hits all alike."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_encoder(device: str, batch_sizes: list[int], seq_lens: list[int], n: int, reps: int) -> list[str]:
    from models.encoder import Encoder
    from models.heads import features

    rows = ["| batch size | tokens | examples/s | tokens/s | with head: examples/s |", "|---:|---:|---:|---:|---:|"]
    for seq in seq_lens:
        for bs in batch_sizes:
            enc = Encoder(device=device, max_tokens=seq, batch_size=bs)
            texts = texts_of(enc.tokenizer, max(n, bs), seq - 2)
            head = _head()
            t, t_head = interleaved([lambda: enc.encode_segments([""] * len(texts), texts),
                                     lambda: head.score(features(enc.encode_segments([""] * len(texts), texts)))], reps)
            eps = len(texts) / t
            rows.append(f"| {bs} | {seq} | {eps:,.1f} | {eps * seq:,.0f} | {len(texts) / t_head:,.1f} |")
            print(rows[-1], flush=True)
    return rows


def _head():
    from models import DEFAULT_HEAD_DIR
    from models.heads import load_head

    return load_head(DEFAULT_HEAD_DIR, "quality")


def bench_head(n: int = 20000) -> list[str]:
    from models.encoder import SegmentEmbeddings
    from models.heads import FEATURE_SET, features

    rng = np.random.default_rng(0)
    emb = lambda: rng.normal(size=(n, 384)).astype(np.float32)  # noqa: E731
    seg = SegmentEmbeddings(emb(), emb(), emb(), rng.integers(1, 200, n), rng.integers(1, 200, n), np.zeros(n, bool),
                            emb(), emb())
    head = _head()
    t_feat = timed(lambda: features(seg), 3)
    x = features(seg)
    t_head = timed(lambda: head.score(x), 3)
    return ["| step | examples/s |", "|---|---:|",
            f"| `features` ({FEATURE_SET}, {x.shape[1]} columns) | {n / t_feat:,.0f} |",
            f"| quality head (numpy, linear) | {n / t_head:,.0f} |"]


def bench_reward(device: str, settings: list[tuple[int, int]], n: int, reps: int, tmp: Path) -> list[str]:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from models.encoder import default_model_path
    from models.reward_hf import HFRewardModel

    folder = tmp / "bert_base_rm"
    if not folder.exists():
        tok = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
        torch.manual_seed(0)
        BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, num_labels=1)).save_pretrained(folder)
        tok.save_pretrained(folder)
    rows = ["| batch size | tokens | examples/s | tokens/s |", "|---:|---:|---:|---:|"]
    for bs, seq in settings:
        rm = HFRewardModel(str(folder), device=device, max_tokens=seq, batch_size=bs)
        half = (seq - 3) // 2
        prompts = texts_of(rm.tokenizer, max(n, bs), half, seed=1)
        responses = texts_of(rm.tokenizer, max(n, bs), seq - 3 - half, seed=2)
        t = timed(lambda: rm.score(prompts, responses), reps)
        rows.append(f"| {bs} | {seq} | {len(prompts) / t:,.1f} | {len(prompts) * seq / t:,.0f} |")
        print(rows[-1], flush=True)
    return rows


def bench_stream(device: str, batch: int, reps: int) -> list[str]:
    """Pipeline.process with the model stage vs the model's own batch throughput, same texts."""
    from models import DEFAULT_HEAD_DIR
    from models.heads import features, load_head
    from models.stage import ModelScoreStage, shared_encoder
    from quality.pipeline import Pipeline
    from quality.records import RawRecord

    enc = shared_encoder(None, device, 256, 64, "auto")
    q, r = load_head(DEFAULT_HEAD_DIR, "quality"), load_head(DEFAULT_HEAD_DIR, "reward")
    rng = np.random.default_rng(3)
    lens = rng.integers(20, 200, size=batch)
    prompts = texts_of(enc.tokenizer, batch, 30, seed=4)
    texts = texts_of(enc.tokenizer, batch, 200, seed=5)
    responses = [t for t in (" ".join(x.split()[:k]) for x, k in zip(texts, lens))]
    raws = [RawRecord(orjson.dumps({"id": f"b{i}", "instruction": p, "output": o}), {"file": "bench", "line": i})
            for i, (p, o) in enumerate(zip(prompts, responses))]
    pipe = Pipeline([ModelScoreStage(enc, quality_head=q, reward_head=r)])
    m, s = interleaved([lambda: (q.score(f := features(enc.encode_segments(prompts, responses))), r.score(f)),
                        lambda: pipe.process(raws)], reps)
    return ["| path | examples/s |", "|---|---:|", f"| model alone: encode_segments + both heads | {batch / m:,.1f} |",
            f"| pipeline: parse + normalize + model stage + decisions | {batch / s:,.1f} |",
            f"| ratio pipeline / model | {m / s:.2f} |"]


def write_section(doc: Path, key: str, body: str) -> None:
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    text = doc.read_text() if doc.exists() else ""
    block = f"{start}\n{body}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text += f"\n{block}\n"
    doc.write_text(text)


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    ap.add_argument("--batch-sizes", default=None, help="comma list (default: 8,32,64 on CPU; 64,256,1024 on GPU)")
    ap.add_argument("--seq-lens", default="64,128,256", help="comma list of token lengths (default: %(default)s)")
    ap.add_argument("--n", type=int, default=None, help="examples per timed run (default: 64 CPU, 8192 GPU)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--doc", type=Path, default=Path("docs/models.md"))
    ap.add_argument("--tmp", type=Path, default=Path(".cache/bench"))
    args = ap.parse_args(argv)
    gpu = args.device.startswith("cuda")
    batch_sizes = [int(x) for x in (args.batch_sizes or ("64,256,1024" if gpu else "8,32,64")).split(",")]
    seq_lens = [int(x) for x in args.seq_lens.split(",")]
    n = args.n or (8192 if gpu else 64)
    args.tmp.mkdir(parents=True, exist_ok=True)
    where = (torch.cuda.get_device_name(0) if gpu else f"{platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} torch threads")
    parts = [f"Measured {time.strftime('%Y-%m-%d')} by `bench/bench_models.py --device {args.device}` on {where}; "
             f"torch {torch.__version__}; {n} examples per timed run, median of {args.reps}.", "",
             "**Encoder (all-MiniLM-L6-v2) by batch size and sequence length**", ""]
    parts += bench_encoder(args.device, batch_sizes, seq_lens, n, args.reps)
    parts += ["", "**Heads alone** (numpy, CPU)", ""] + bench_head()
    rm_settings = [(64, 256), (256, 256)] if gpu else [(16, 128), (16, 256)]
    parts += ["", "**HF reward model, BERT-base size (random weights), (prompt, response) pairs**", ""]
    parts += bench_reward(args.device, rm_settings, min(n, 2048) if gpu else 32, args.reps, args.tmp)
    parts += ["", "**Stream mode: the pipeline around the model** (batch of 256 SFT records, 50-230 tokens)", ""]
    parts += bench_stream(args.device, 256, args.reps)
    body = "\n".join(parts)
    write_section(args.doc, "cuda" if gpu else "cpu", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
