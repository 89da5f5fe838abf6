"""Reward models from the ecosystem: any ``AutoModelForSequenceClassification`` with one output.

OpenAssistant's ``reward-model-deberta-v3-large-v2``, Skywork-Reward-V2, ... by local
folder or (where a hub is reachable) model id. A (prompt, response) pair is rendered
with the model's own chat template when its tokenizer has one (the prompt turns, then
the response as the assistant turn), and as a text pair ``tokenizer(prompt, response)``
otherwise, which is how the OpenAssistant DeBERTa models were trained. Inputs longer
than ``max_tokens`` are cut from the left (the start of the rendered text, or of the
longer part of a text pair), never at the response's end.

Scoring sorts inputs by length into micro-batches, as the encoder does. On GPU the
model runs in bfloat16 (float16 where bf16 is unsupported).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from models.encoder import resolve_device
from quality.records import Message


class HFRewardModel:
    """A sequence-classification reward model.

    Args:
        model: local folder or model id.
        device: ``"auto"``/``None``, ``"cpu"``, ``"cuda:0"``...
        max_tokens: longest input; longer ones are cut from the left.
        batch_size: pairs per forward pass.
        dtype: ``"auto"`` (bf16/fp16 on GPU, fp32 on CPU), ``"float32"``, ``"bfloat16"``, ``"float16"``.

    Raises:
        ValueError: the model cannot be loaded or has more than two outputs.
    """

    def __init__(self, model: str, device: str | None = None, max_tokens: int = 512, batch_size: int = 16,
                 dtype: str = "auto") -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if max_tokens < 8:
            raise ValueError(f"max_tokens must be >= 8, got {max_tokens!r}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size!r}")
        self.model_name = model
        self.device = resolve_device(device)
        if dtype == "auto":
            dtype = "float32"
            if self.device.startswith("cuda"):
                dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {dtype!r}")
        self.dtype = dtype
        local = Path(model).is_dir()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=local)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                model, local_files_only=local, dtype=getattr(torch, dtype))
        except OSError as exc:
            raise ValueError(f"cannot load reward_model={model!r}: {exc}") from None
        labels = int(self.model.config.num_labels)
        if labels not in (1, 2):
            raise ValueError(f"reward_model={model!r} has {labels} outputs; a reward model has 1 (a score) "
                             "or 2 (the score is logit[1] - logit[0])")
        self.model.to(self.device).eval()
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.chat_template = bool(getattr(self.tokenizer, "chat_template", None))

    def version(self) -> dict[str, Any]:
        return {"reward_model": self.model_name, "max_tokens": self.max_tokens, "dtype": self.dtype,
                "chat_template": self.chat_template}

    def render(self, prompt: Sequence[Message] | str, response: str) -> str | tuple[str, str]:
        """The model input for one pair: chat-template text, or a (prompt, response) text pair."""
        turns = [Message("user", prompt)] if isinstance(prompt, str) else list(prompt)
        if self.chat_template:
            conv = [{"role": m.role, "content": m.content} for m in turns]
            conv.append({"role": "assistant", "content": response})
            return self.tokenizer.apply_chat_template(conv, tokenize=False)
        return "\n".join(m.content for m in turns if m.role != "system"), response

    def score(self, prompts: Sequence[Sequence[Message] | str], responses: Sequence[str]) -> np.ndarray:
        """One float32 reward per (prompt, response)."""
        import torch

        if len(prompts) != len(responses):
            raise ValueError(f"prompts and responses differ in length: {len(prompts)} != {len(responses)}")
        inputs = [self.render(p, r) for p, r in zip(prompts, responses)]
        lengths = [len(x) if isinstance(x, str) else len(x[0]) + len(x[1]) for x in inputs]
        order = np.argsort([-n for n in lengths], kind="stable")
        out = np.zeros(len(inputs), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            chunk = [inputs[i] for i in idx]
            kwargs: dict[str, Any] = {"padding": True, "truncation": True, "max_length": self.max_tokens,
                                      "return_tensors": "pt"}
            if isinstance(chunk[0], str):  # the template already holds the special tokens
                enc = self.tokenizer(chunk, add_special_tokens=False, **kwargs)
            else:
                enc = self.tokenizer([c[0] for c in chunk], [c[1] for c in chunk], **kwargs)
            with torch.inference_mode():
                logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits.float()
            value = logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]
            out[idx] = value.cpu().numpy()
        return out
