"""Small heads on frozen encoder features: a quality classifier and a Bradley–Terry reward head.

A head is a standardization (mean, scale) followed by a linear layer or a one-hidden-
layer MLP, stored as ``<name>.safetensors`` (weights) and ``<name>.json`` (what it is,
which features and encoder it expects, its calibrated default threshold). Scoring is
numpy only: once the encoder has run, a head costs microseconds per example.

Features (:func:`features`, set ``seg-v2``) come from one encoder pass over
``prompt + "\\n\\n" + response`` (:meth:`models.encoder.Encoder.encode_segments`): the
pooled example, prompt and response embeddings, their elementwise product, the
prompt–response cosine, log token counts, a truncation flag, the prompt and
response embeddings scaled by the response's log length (so that the preferred length
can depend on what was asked), and the example and response pooled at the encoder's
intermediate layer. The lengths matter:
on Alpaca, "shorter output is better" alone reaches ~0.62 AUROC against the AlpaGasus
label, and the reward data has strong length biases that differ by source.
``seg-v1`` (the same without the intermediate layer) is still computed for heads
trained by earlier versions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

FEATURE_SET = "seg-v2"  # what new heads are trained on
LOG_TOKENS_CENTER = 4.0  # log(1 + ~54 tokens), a typical response length
KINDS = ("quality", "reward")
ARCHS = ("linear", "mlp")


def _seg_v1(seg) -> np.ndarray:
    p, r, x = seg.prompt, seg.response, seg.example
    pt = np.log1p(seg.prompt_tokens.astype(np.float32))[:, None]
    rt = np.log1p(seg.response_tokens.astype(np.float32))[:, None]
    cos_pr = (p * r).sum(1, keepdims=True)
    cos_xr = (x * r).sum(1, keepdims=True)
    trunc = seg.truncated.astype(np.float32)[:, None]
    # length interactions: whether longer is better depends on the request (in hh-rlhf,
    # helpful prompts favour the longer answer and harmful ones the shorter refusal)
    rt_c = rt - LOG_TOKENS_CENTER
    return np.concatenate([x, p, r, p * r, cos_pr, cos_xr, pt, rt, rt - pt, trunc, p * rt_c, r * rt_c],
                          axis=1).astype(np.float32)


def _seg_v2(seg) -> np.ndarray:
    return np.concatenate([_seg_v1(seg), seg.example_mid, seg.response_mid], axis=1).astype(np.float32)


FEATURE_SETS = {"seg-v1": _seg_v1, "seg-v2": _seg_v2}


def features(seg, feature_set: str = FEATURE_SET) -> np.ndarray:
    """The feature matrix (float32) of a :class:`~models.encoder.SegmentEmbeddings` for a feature set."""
    try:
        return FEATURE_SETS[feature_set](seg)
    except KeyError:
        raise ValueError(f"unknown feature set {feature_set!r}; known: {sorted(FEATURE_SETS)}") from None


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


@dataclass
class Head:
    """A trained head: weights plus the metadata that says how to use them.

    ``kind`` is ``quality`` (output: probability that the example carries the positive
    label) or ``reward`` (output: a Bradley–Terry reward; ``sigmoid(r_chosen - r_rejected)``
    is the modelled probability that chosen is preferred).
    """

    kind: str
    arch: str
    weights: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.kind))

    @property
    def feature_set(self) -> str:
        return str(self.meta.get("features", FEATURE_SET))

    def logits(self, feats: np.ndarray) -> np.ndarray:
        w = self.weights
        z = (feats - w["mean"]) / w["scale"]
        if self.arch == "mlp":
            z = np.maximum(z @ w["w1"] + w["b1"], 0.0)
        return (z @ w["w"] + w["b"]).reshape(-1).astype(np.float32)

    def score(self, feats: np.ndarray) -> np.ndarray:
        """Quality: a probability in [0, 1]; reward: the raw reward."""
        z = self.logits(feats)
        return _sigmoid(z).astype(np.float32) if self.kind == "quality" else z

    def version(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "arch": self.arch,
                "sha256": self.meta.get("sha256", "unsaved"), "features": self.feature_set}

    def save(self, folder: str | Path, name: str | None = None, meta: Mapping[str, Any] | None = None) -> Path:
        """Writes ``<name>.safetensors`` and ``<name>.json`` into ``folder``; returns the weights path."""
        from safetensors.numpy import save_file

        name = name or self.kind
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.safetensors"
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in self.weights.items()}, str(path))
        path.chmod(0o644)  # safetensors writes 0600; package data must be readable by all
        self.meta = {**self.meta, **(meta or {}), "name": name, "kind": self.kind, "arch": self.arch,
                     "features": self.feature_set, "sha256": _sha256(path)}
        (folder / f"{name}.json").write_text(json.dumps(self.meta, indent=2, sort_keys=True) + "\n")
        return path


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load_head(folder: str | Path, name: str) -> Head:
    """Loads ``<folder>/<name>.safetensors`` with its ``.json`` metadata.

    Raises:
        FileNotFoundError: either file is missing (naming it).
        ValueError: the metadata names a feature set this code does not compute.
    """
    from safetensors.numpy import load_file

    folder = Path(folder)
    meta_path, weights_path = folder / f"{name}.json", folder / f"{name}.safetensors"
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"head file not found: {p}; train one with `sieve train-scorer`")
    meta = json.loads(meta_path.read_text())
    if meta.get("features", FEATURE_SET) not in FEATURE_SETS:
        raise ValueError(f"head {weights_path} expects features {meta.get('features')!r}; this Sieve computes "
                         f"{sorted(FEATURE_SETS)}. Retrain it with `sieve train-scorer`")
    return Head(meta["kind"], meta["arch"], dict(load_file(str(weights_path))), meta)


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one head. ``l2`` is the weight decay on standardized features."""

    arch: str = "linear"
    hidden: int = 64
    l2: float = 3.0
    epochs: int = 300  # L-BFGS iterations
    lr: float = 1.0
    dropout: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        for name in ("hidden", "epochs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.l2 < 0 or self.lr <= 0:
            raise ValueError(f"l2 must be >= 0 and lr > 0, got l2={self.l2!r}, lr={self.lr!r}")


def _standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0)
    scale = x.std(0)
    return mean.astype(np.float32), np.where(scale < 1e-6, 1.0, scale).astype(np.float32)


def _net(dim: int, cfg: TrainConfig):
    import torch

    if cfg.arch == "linear":
        return torch.nn.Sequential(torch.nn.Linear(dim, 1))
    return torch.nn.Sequential(torch.nn.Linear(dim, cfg.hidden), torch.nn.ReLU(), torch.nn.Dropout(cfg.dropout),
                               torch.nn.Linear(cfg.hidden, 1))


def _export(kind: str, cfg: TrainConfig, net, mean: np.ndarray, scale: np.ndarray) -> Head:
    layers = [m for m in net if hasattr(m, "weight")]
    w: dict[str, np.ndarray] = {"mean": mean, "scale": scale}
    if cfg.arch == "mlp":
        w["w1"] = layers[0].weight.detach().numpy().T.copy()
        w["b1"] = layers[0].bias.detach().numpy().copy()
    w["w"] = layers[-1].weight.detach().numpy().T.copy()
    w["b"] = layers[-1].bias.detach().numpy().copy()
    return Head(kind, cfg.arch, w, {"features": FEATURE_SET, "train": cfg.__dict__.copy()})


def _fit(loss_fn, net, cfg: TrainConfig) -> None:
    """Full-batch L-BFGS (deterministic for a given seed) on loss + l2/2 * ||weights||^2."""
    import torch

    opt = torch.optim.LBFGS(net.parameters(), lr=cfg.lr, max_iter=cfg.epochs, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        penalty = sum((p ** 2).sum() for n, p in net.named_parameters() if n.endswith("weight"))
        total = loss_fn() + cfg.l2 * penalty / 2
        total.backward()
        return total

    opt.step(closure)


def train_quality_head(x: np.ndarray, y: np.ndarray, cfg: TrainConfig = TrainConfig()) -> Head:
    """A binary classifier of ``y`` (0/1) from features ``x``, trained full-batch with a seeded init."""
    import torch

    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty and equally long, got {len(x)} and {len(y)}")
    if not 0 < float(np.mean(y)) < 1:
        raise ValueError("y must contain both classes (0 and 1)")
    torch.manual_seed(cfg.seed)
    mean, scale = _standardizer(x)
    xt = torch.from_numpy((x - mean) / scale)
    yt = torch.from_numpy(y.astype(np.float32))
    net = _net(x.shape[1], cfg)
    bce = torch.nn.BCEWithLogitsLoss()
    net.train()
    _fit(lambda: bce(net(xt).squeeze(-1), yt), net, cfg)
    net.eval()
    return _export("quality", cfg, net, mean, scale)


def train_reward_head(x_chosen: np.ndarray, x_rejected: np.ndarray, cfg: TrainConfig = TrainConfig(),
                      weights: np.ndarray | None = None) -> Head:
    """A Bradley–Terry reward r(x): minimizes ``-log sigmoid(r(chosen) - r(rejected))``.

    Args:
        weights: optional per-pair weights (e.g. to balance sources); default uniform.
    """
    import torch
    import torch.nn.functional as F

    if x_chosen.shape != x_rejected.shape or len(x_chosen) == 0:
        raise ValueError(f"x_chosen and x_rejected must be non-empty with one shape, got {x_chosen.shape} "
                         f"and {x_rejected.shape}")
    torch.manual_seed(cfg.seed)
    mean, scale = _standardizer(np.concatenate([x_chosen, x_rejected]))
    xc = torch.from_numpy((x_chosen - mean) / scale)
    xr = torch.from_numpy((x_rejected - mean) / scale)
    wt = torch.ones(len(xc)) if weights is None else torch.from_numpy(np.asarray(weights, dtype=np.float32))
    wt = wt / wt.mean()
    net = _net(x_chosen.shape[1], cfg)
    net.train()
    _fit(lambda: (F.softplus(-(net(xc) - net(xr)).squeeze(-1)) * wt).mean(), net, cfg)
    net.eval()
    head = _export("reward", cfg, net, mean, scale)
    head.weights["b"] = np.zeros_like(head.weights["b"])  # a BT reward has no meaningful offset
    return head
