"""HF reward-model plumbing with a tiny BERT built from a config in the test (random weights).

The tokenizer is the bundled MiniLM one, so nothing is downloaded. Behaviour of a real
reward model is not tested here (none ships offline); the default head's is in test_heads.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.encoder import default_model_path
from quality.records import Message

pytestmark = pytest.mark.models

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}")


def _tiny_reward_model(folder, num_labels: int = 1, chat_template: str | None = None):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    if chat_template:
        tok.chat_template = chat_template
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=num_labels)
    BertForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_reward_model(tmp_path_factory.mktemp("tiny_rm"))


def test_scores_are_deterministic_and_match_a_manual_forward(tiny):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from models.reward_hf import HFRewardModel

    rm = HFRewardModel(tiny, device="cpu", max_tokens=64, batch_size=2)
    assert not rm.chat_template
    prompts = ["Name a colour.", [Message("user", "Say hi."), Message("assistant", "Hi!"), Message("user", "Again")]]
    responses = ["Blue.", "Hello there, friend."]
    a = rm.score(prompts, responses)
    assert a.shape == (2,) and a.dtype == np.float32
    np.testing.assert_allclose(rm.score(prompts[::-1], responses[::-1])[::-1], a, atol=1e-5)
    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForSequenceClassification.from_pretrained(tiny).eval()
    with torch.inference_mode():
        ref = model(**tok("Name a colour.", "Blue.", return_tensors="pt")).logits[0, 0].item()
    assert a[0] == pytest.approx(ref, abs=1e-5)


def test_chat_template_is_used_when_the_tokenizer_has_one(tmp_path):
    from models.reward_hf import HFRewardModel

    rm = HFRewardModel(_tiny_reward_model(tmp_path, chat_template=TEMPLATE), device="cpu", max_tokens=64)
    assert rm.chat_template
    text = rm.render([Message("user", "Name a colour.")], "Blue.")
    assert text == "<|user|>Name a colour.\n<|assistant|>Blue.\n"
    long_prompt = "word " * 500
    assert np.isfinite(rm.score([long_prompt], ["Blue."])).all()  # cut from the left, no error


def test_two_label_models_score_the_difference_and_others_are_refused(tmp_path):
    from models.reward_hf import HFRewardModel

    rm = HFRewardModel(_tiny_reward_model(tmp_path / "two", num_labels=2), device="cpu")
    assert rm.score(["Hi"], ["Hello"]).shape == (1,)
    with pytest.raises(ValueError, match="3 outputs"):
        HFRewardModel(_tiny_reward_model(tmp_path / "three", num_labels=3), device="cpu")


def test_model_stage_uses_the_reward_model_for_pairs(tiny, encoder):
    import orjson

    from models import DEFAULT_HEAD_DIR
    from models.heads import load_head
    from models.reward_hf import HFRewardModel
    from models.stage import ModelScoreStage
    from quality.pipeline import Pipeline
    from quality.records import RawRecord

    rm = HFRewardModel(tiny, device="cpu", max_tokens=64)
    stage = ModelScoreStage(encoder, quality_head=load_head(DEFAULT_HEAD_DIR, "quality"), reward_model=rm)
    rows = [{"id": "p", "prompt": "Name a colour.", "chosen": "Blue.", "rejected": "A dog."},
            {"id": "s", "instruction": "Name a colour.", "output": "Red."}]
    out = Pipeline([stage]).process([RawRecord(orjson.dumps(r), {"file": "t", "line": i}) for i, r in enumerate(rows)])
    pair, sft = out[0].scores, out[1].scores
    expected = rm.score(["Name a colour.", "Name a colour."], ["Blue.", "A dog."])
    assert pair["reward_chosen"] == pytest.approx(expected[0], abs=1e-5)
    assert pair["reward_margin"] == pytest.approx(expected[0] - expected[1], abs=1e-5)
    assert sft["reward"] == pytest.approx(rm.score(["Name a colour."], ["Red."])[0], abs=1e-5)
    assert stage.version()["reward"]["reward_model"] == tiny


def test_bfloat16_scores_are_float32_and_close_to_full_precision(tiny):
    """The dtype a GPU gets by default, on CPU: loaded in bf16, scores come back as float32."""
    from models.reward_hf import HFRewardModel

    full = HFRewardModel(tiny, device="cpu", max_tokens=64, batch_size=2)
    half = HFRewardModel(tiny, device="cpu", max_tokens=64, batch_size=2, dtype="bfloat16")
    assert half.version()["dtype"] == "bfloat16"
    prompts, responses = ["Name a colour.", "Add 2 and 3."], ["Blue.", "5"]
    a, b = full.score(prompts, responses), half.score(prompts, responses)
    assert b.dtype == np.float32 and np.isfinite(b).all()
    np.testing.assert_allclose(b, a, atol=5e-4)  # logits ~4e-3 from this tiny model; 1e-4 apart when written
