"""Evaluation metrics for the scoring heads (AUROC, precision at an accept rate, pairwise accuracy)."""

from __future__ import annotations

import numpy as np


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counted half.

    scikit-learn's implementation (installed with sentence-transformers); this wrapper
    only names the failure when one class is missing.
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"auroc needs both classes, got {n_pos} positives and {n_neg} negatives")
    return float(roc_auc_score(y, np.asarray(score, dtype=np.float64)))


def precision_at_rate(y: np.ndarray, score: np.ndarray, rate: float) -> float:
    """Share of positives among the top ``rate`` fraction of examples by score."""
    if not 0 < rate <= 1:
        raise ValueError(f"rate must be in (0, 1], got {rate!r}")
    y = np.asarray(y).astype(bool)
    k = max(1, int(round(rate * len(y))))
    top = np.argsort(-np.asarray(score, dtype=np.float64), kind="mergesort")[:k]
    return float(y[top].mean())


def pairwise_accuracy(chosen: np.ndarray, rejected: np.ndarray) -> float:
    """Share of pairs where chosen scores above rejected; exact ties count half."""
    c, r = np.asarray(chosen, dtype=np.float64), np.asarray(rejected, dtype=np.float64)
    if len(c) == 0:
        raise ValueError("pairwise_accuracy needs at least one pair")
    return float(((c > r).sum() + 0.5 * (c == r).sum()) / len(c))
