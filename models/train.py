"""Training the heads: cross-validated, seeded, written with a model card next to the weights.

:func:`train_quality` fits the quality classifier on labelled SFT examples (e.g.
Alpaca with the AlpaGasus ``in_alpagasus_claude_t45`` label); :func:`train_reward`
fits the Bradley–Terry reward head on valid human-labelled preference pairs. Both
first estimate quality out of sample with k-fold cross-validation, the folds fixed by
a hash of the prompt (so the same prompt never sits on both sides of a split), then
fit on everything and write ``<kind>.safetensors``, ``<kind>.json`` and a section of
``MODEL_CARD.md``. The encoder pass is cached (see :mod:`models.datasets`).
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from models.datasets import (cached_segments, group_of, labelled_examples, pair_segments, preference_pairs,
                             sft_segments, source_of)
from models.heads import Head, TrainConfig, features, train_quality_head, train_reward_head
from models.metrics import auroc, pairwise_accuracy, precision_at_rate
from quality.scoring.gate import ScoringSettings


def _file_info(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        data = Path(p).read_bytes()
        out.append({"file": Path(p).name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()[:16]})
    return out


def _folds(prompts: Sequence[str], k: int, seed: int) -> np.ndarray:
    return np.array([group_of(p, k, salt=f"cv{seed}") for p in prompts])


def train_quality(encoder, data: Sequence[str | Path], labels: str | Path, *,
                  label_key: str = "in_alpagasus_claude_t45",
                  cfg: TrainConfig = TrainConfig(), folds: int = 5, keep_rate: float = 0.8,
                  mismatched_negatives: bool = True,
                  cache_dir: str | Path | None = None) -> tuple[Head, dict[str, Any]]:
    """Cross-validates, then fits the quality head on all rows; returns it with its metrics.

    Args:
        keep_rate: share of the training examples the calibrated ``default_threshold``
            keeps (the threshold is that quantile of the final head's scores).
        mismatched_negatives: add, for every training row, its prompt with another row's
            response (a seeded derangement) as a negative. Labels like AlpaGasus's rarely
            show an off-topic answer, so without these the head barely notices one; with
            them it ranks the true response first ~85% of the time, at no cost in AUROC.
    """
    if not 0 < keep_rate <= 1:
        raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate!r}")
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds!r}")
    ls = labelled_examples(data, labels, label_key)
    x = features(sft_segments(encoder, ls.examples, cache_dir))
    y = ls.labels
    n = len(y)
    perm = np.random.default_rng(0).permutation(n)  # fixed: the negatives do not move with the fold seed
    fixed = np.where(perm == np.arange(n))[0]  # a derangement: no row keeps its own response
    perm[fixed] = perm[(fixed + 1) % n]
    x_mis = None
    if mismatched_negatives:
        x_mis = features(cached_segments(encoder, [e.prompt_text for e in ls.examples],
                                         [ls.examples[j].response_text for j in perm], cache_dir))

    def fit(rows: np.ndarray) -> Head:
        if x_mis is None:
            return train_quality_head(x[rows], y[rows], cfg)
        return train_quality_head(np.concatenate([x[rows], x_mis[rows]]),
                                  np.concatenate([y[rows], np.zeros(len(rows), dtype=np.float32)]), cfg)

    fold = _folds([e.prompt_text for e in ls.examples], folds, cfg.seed)
    oof = np.zeros(n, dtype=np.float64)
    oof_mis = np.zeros(n, dtype=np.float64)
    x_other = x_mis if x_mis is not None else x[perm]
    for f in range(folds):
        tr, te = fold != f, fold == f
        h = fit(np.where(tr)[0])
        oof[te], oof_mis[te] = h.logits(x[te]), h.logits(x_other[te])
    lengths = np.array([len(e.response_text) for e in ls.examples], dtype=np.float64)
    head = fit(np.arange(n))
    scores = head.score(x)
    threshold = float(np.quantile(scores, 1 - keep_rate)) if keep_rate < 1 else 0.0
    kept = oof >= np.quantile(oof, 1 - keep_rate)
    metrics = {
        "rows": int(len(y)), "positives": int(y.sum()), "base_rate": round(float(y.mean()), 4),
        "cv_folds": folds, "cv_auroc": round(auroc(y, oof), 4),
        "cv_auroc_by_fold": [round(auroc(y[fold == f], oof[fold == f]), 4) for f in range(folds)],
        f"cv_precision_at_{keep_rate:g}": round(float(y[kept].mean()), 4),
        "cv_precision_at_0.1": round(precision_at_rate(y, oof, 0.1), 4),
        "baseline_shorter_output_auroc": round(auroc(y, -lengths), 4),
        "train_auroc": round(auroc(y, scores), 4),
        "mismatched_negatives": mismatched_negatives,
        "cv_own_response_beats_mismatched": round(float(np.mean(oof > oof_mis)), 4) if x_mis is not None else None,
        "default_threshold": round(threshold, 6), "keep_rate": keep_rate,
    }
    head.meta.update(kind="quality", label=label_key, encoder=encoder.version(), default_threshold=round(threshold, 6),
                     data=_file_info(list(data) + [labels]), metrics=metrics)
    return head, metrics


def train_reward(encoder, data: Sequence[str | Path], labels: str | Path | None = None, *,
                 cfg: TrainConfig = TrainConfig(), folds: int = 5, balance_sources: bool = False,
                 cache_dir: str | Path | None = None) -> tuple[Head, dict[str, Any]]:
    """Cross-validates, then fits the Bradley–Terry reward head on all valid pairs.

    Args:
        labels: a ``preference_labels.jsonl``-style file; rows with ``valid_pair`` false
            (ties, identical sides, prompt mismatches) are left out.
        balance_sources: weight pairs so every source (id prefix) counts the same in the
            loss. Off by default: on the dev data it did not help (many tiny LLMBar subsets).
    """
    pairs = preference_pairs(data, labels, valid_only=True)
    if len(pairs) < folds * 2:
        raise ValueError(f"only {len(pairs)} valid preference pairs in {list(map(str, data))}; need >= {folds * 2}")
    seg_c, seg_r = pair_segments(encoder, pairs, cache_dir)
    xc, xr = features(seg_c), features(seg_r)
    sources = np.array([source_of(p.id) for p in pairs])
    weights = None
    if balance_sources:
        counts = {s: int((sources == s).sum()) for s in set(sources)}
        weights = np.array([1.0 / counts[s] for s in sources], dtype=np.float32)
    fold = _folds([p.prompt_text for p in pairs], folds, cfg.seed)
    oof_c = np.zeros(len(pairs))
    oof_r = np.zeros(len(pairs))
    for f in range(folds):
        tr, te = fold != f, fold == f
        h = train_reward_head(xc[tr], xr[tr], cfg, None if weights is None else weights[tr])
        oof_c[te], oof_r[te] = h.logits(xc[te]), h.logits(xr[te])
    len_c = np.array([len(p.response_text) for p in pairs], dtype=np.float64)
    len_r = np.array([len(p.rejected_text) for p in pairs], dtype=np.float64)
    per_source: dict[str, dict[str, float]] = defaultdict(dict)
    for s in sorted(set(sources)):
        m = sources == s
        per_source[s] = {"pairs": int(m.sum()), "cv_accuracy": round(pairwise_accuracy(oof_c[m], oof_r[m]), 4),
                         "baseline_longer_wins": round(pairwise_accuracy(len_c[m], len_r[m]), 4)}
    hh = [v["cv_accuracy"] for s, v in per_source.items() if s.startswith("hh_")]
    head = train_reward_head(xc, xr, cfg, weights)
    margins = head.logits(xc) - head.logits(xr)
    metrics = {
        "pairs": len(pairs), "cv_folds": folds, "balance_sources": balance_sources,
        "cv_accuracy_all": round(pairwise_accuracy(oof_c, oof_r), 4),
        "cv_accuracy_mean_hh_rlhf": round(float(np.mean(hh)), 4) if hh else None,
        "per_source": dict(per_source),
        "train_accuracy_all": round(pairwise_accuracy(head.logits(xc), head.logits(xr)), 4),
        "cv_share_below_default_min_margin": round(float(np.mean(oof_c - oof_r < ScoringSettings().min_margin)), 4),
        "cv_margin_quantiles": {q: round(float(np.quantile(oof_c - oof_r, float(q))), 4)
                                for q in ("0.01", "0.02", "0.05", "0.1", "0.25", "0.5")},
        "train_margin_quantiles": {q: round(float(np.quantile(margins, float(q))), 4)
                                   for q in ("0.01", "0.02", "0.05", "0.1", "0.25", "0.5")},
    }
    files = list(data) + ([labels] if labels else [])
    head.meta.update(kind="reward", encoder=encoder.version(), data=_file_info(files), metrics=metrics)
    return head, metrics


def missing_heads(folder: str | Path, min_margin: float | None = -0.5, reward_model: str | None = None) -> list[str]:
    """What a pipeline with ``scoring.head_dir = folder`` would lack, as warnings (empty: nothing).

    Args:
        min_margin, reward_model: the scoring settings the heads will run with; the
            pair-margin check needs a reward head unless a reward model replaces it.
    """
    folder = Path(folder)
    out = []
    if not (folder / "quality.json").is_file():
        out.append(f"no quality head in {folder}: the model stage cannot load this folder (it needs quality.json); "
                   "train one with --quality-data and --quality-labels")
    if not (folder / "reward.json").is_file() and reward_model is None and min_margin is not None:
        out.append(f"no reward head in {folder}: with scoring.head_dir = {folder}, preference pairs get no reward "
                   f"scores and the pair-margin check (scoring.min_margin = {min_margin:g}) rejects nothing; train one "
                   "with --pairs, set scoring.reward_model, or set scoring.min_margin = none to turn the check off "
                   "knowingly")
    return out


def write_card(folder: str | Path, heads: Sequence[Head], command: str = "", warnings: Sequence[str] = (),
               when: str | None = None) -> Path:
    """Writes ``MODEL_CARD.md`` describing the run that trained ``heads``: when, how (the command,
    the encoder, the feature set, the training settings), on what (each data file with its size
    and SHA-256 prefix, the rows used), how well (cross-validated metrics), the quality head's
    threshold, and what the folder lacks (``warnings``). Heads in the folder from another run
    are named as such, not described as this run's."""
    import datetime

    folder = Path(folder)
    when = when or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    trained = {h.name for h in heads}
    encoders = sorted({json.dumps(h.meta.get("encoder", {}), sort_keys=True) for h in heads})
    lines = ["# Scorer heads trained by `sieve train-scorer`", "",
             f"Trained {when}: {', '.join(f'`{h.name}` ({h.kind})' for h in heads) or 'nothing'}, small heads on "
             "frozen encoder features (`models/heads.py`). Point `scoring.head_dir` at this folder to use them.", "",
             "- encoder: " + "; ".join(f"`{e}`" for e in encoders),
             "- feature set: " + ", ".join(sorted({f"`{h.feature_set}`" for h in heads})),
             f"- software: Python {platform.python_version()}, numpy {np.__version__}"]
    if command:
        lines += ["", "Reproduce with:", "", "```", command, "```"]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    lines.append("")
    for head in heads:
        m, metrics = head.meta, head.meta.get("metrics", {})
        rows = metrics.get("rows", metrics.get("pairs"))
        lines += [f"## `{head.name}` ({head.kind}, {head.arch})", "",
                  f"- weights: `{head.name}.safetensors` (sha256 {m.get('sha256', '?')}), metadata `{head.name}.json`",
                  f"- trained on {rows} {'labelled examples' if head.kind == 'quality' else 'valid preference pairs'}"
                  + (f" ({metrics.get('positives')} positive, label `{m.get('label')}`)" if head.kind == "quality"
                     else "") + f"; {metrics.get('cv_folds')}-fold cross-validation by prompt hash",
                  f"- training settings: `{json.dumps(m.get('train', {}), sort_keys=True)}`"]
        if head.kind == "quality":
            lines.append(f"- threshold: {m.get('default_threshold')} (the default of `scoring.quality_threshold` "
                         f"with this head: it keeps {metrics.get('keep_rate')} of the training rows)")
        lines.append("- data:")
        lines += [f"  - `{d['file']}` ({d['bytes']} bytes, sha256 {d['sha256']})" for d in m.get("data", [])]
        lines += ["- metrics:", "", "```json", json.dumps(metrics, indent=2, sort_keys=True), "```", ""]
    others = sorted(p.stem for p in folder.glob("*.json") if p.stem not in trained and p.stem in ("quality", "reward"))
    if others:
        lines += ["## Not from this run", "",
                  f"The folder also holds {', '.join(f'`{o}`' for o in others)} from an earlier run (see its "
                  "`.json`): a pipeline on this folder uses it with the heads above.", ""]
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path
