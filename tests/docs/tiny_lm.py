"""A causal language model small enough to train in seconds on CPU, with a chat template, made offline.

For the TRL hand-off of docs/batches.md: it stands in for the page's model id. Byte-level
tokens (259 of them) keep the logits small; random weights, one layer of width 16. What the
test checks is that Sieve's batches go through TRL's trainers as they are, not what is learnt.
"""

from __future__ import annotations

from pathlib import Path


def make_tiny_chat_model(path: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>"]
    vocab = {t: i for i, t in enumerate([*specials, *sorted(ByteLevel.alphabet())])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                                        bos_token="<bos>")
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}"
                               "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                         pad_token_id=0, eos_token_id=1, bos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
