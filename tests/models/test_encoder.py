"""The encoder on the real all-MiniLM-L6-v2, on CPU, on a handful of texts."""

from __future__ import annotations

import numpy as np
import pytest

from models.encoder import Encoder, fit_segments

pytestmark = pytest.mark.models

TEXTS = ["Name a primary colour.", "Blue is a primary colour.", "def add(a, b):\n    return a + b", "x"]


def test_encode_matches_sentence_transformers(encoder):
    ours = encoder.encode(TEXTS)
    reference = encoder._st.encode(TEXTS, normalize_embeddings=True)
    assert ours.shape == (4, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_order_and_batching_do_not_change_embeddings(encoder):
    small = Encoder(device="cpu", batch_size=1)
    np.testing.assert_allclose(small.encode(TEXTS[::-1])[::-1], encoder.encode(TEXTS), atol=1e-5)


def test_one_pass_gives_the_example_prompt_and_response_embeddings(encoder):
    seg = encoder.encode_segments(["What is 2+2?", ""], ["It is 4.", "Just a text."])
    np.testing.assert_allclose(seg.example, encoder.encode(["What is 2+2?\n\nIt is 4.", "Just a text."]), atol=1e-5)
    assert seg.prompt_tokens.tolist()[1] == 0 and not seg.prompt[1].any()  # no prompt: zero vector
    assert seg.response_tokens.tolist() == [4, 4]
    assert not seg.truncated.any()
    related = float(seg.prompt[0] @ seg.response[0])
    assert 0.3 < related < 1.0


def test_the_same_pass_pools_an_intermediate_layer(encoder):
    """``example_mid``/``response_mid``: layer 4 of MiniLM's 6, mean-pooled like the last one."""
    import torch

    assert encoder.mid_layer == 4 and encoder.version()["mid_layer"] == 4
    seg = encoder.encode_segments([""], ["Blue is a primary colour."])
    ids = encoder.tokenizer(["Blue is a primary colour."], return_tensors="pt")
    with torch.inference_mode():
        states = encoder._transformer(**ids, output_hidden_states=True).hidden_states
    mid = states[4][0].mean(0).numpy()
    np.testing.assert_allclose(seg.example_mid[0], mid / np.linalg.norm(mid), atol=1e-5)
    last = states[-1][0].mean(0).numpy()
    assert float(seg.example_mid[0] @ (last / np.linalg.norm(last))) < 0.99  # not the last layer again
    np.testing.assert_allclose(np.linalg.norm(seg.response_mid, axis=1), 1.0, atol=1e-5)


def test_truncation_keeps_the_response_tail_visible(encoder):
    filler = "The committee discussed the annual budget in great detail. " * 80
    a, b = encoder.encode_segments(["Summarize."] * 2, [filler + "In the end it was approved.",
                                                         filler + "Zebras graze in Kenya's savanna."]).response
    assert float(a @ b) < 0.999  # a head-only cut would make them identical
    seg = encoder.encode_segments(["Summarize."], [filler])
    assert seg.truncated[0] and seg.response_tokens[0] > encoder.max_tokens


@pytest.mark.parametrize("p,r,budget,expected", [
    (5, 5, 20, (5, 0, 5, 0)),            # everything fits
    (100, 10, 30, (5, 15, 10, 0)),       # long prompt: its head and its end, the whole short response
    (5, 100, 30, (5, 0, 13, 12)),        # long response: head and tail
    (100, 100, 30, (2, 8, 10, 10)),      # both long: the prompt keeps a third
])
def test_fit_segments(p, r, budget, expected):
    got = fit_segments(p, r, budget)
    assert got == expected
    assert sum(got) == min(p + r, budget)


@pytest.mark.parametrize("kwargs,match", [({"batch_size": 0}, "batch_size"), ({"max_tokens": 4096}, "max_tokens"),
                                          ({"dtype": "int8"}, "dtype"), ({"device": "tpu"}, "device"),
                                          ({"model": "/nonexistent/model-folder"}, "model")])
def test_bad_arguments_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Encoder(**{"device": "cpu", **kwargs})


def test_bfloat16_gives_the_float32_embeddings_and_scores_within_rounding(encoder):
    """The reduced-precision path a GPU takes (dtype auto = bf16 there), run on CPU: same
    embeddings up to bf16 rounding, finite features, nearly the same head scores."""
    from models import DEFAULT_HEAD_DIR
    from models.heads import features, load_head

    half = Encoder(device="cpu", dtype="bfloat16")
    assert half.version()["dtype"] == "bfloat16"
    prompts = ["Name a primary colour.", "Summarize the text.\n\nThe council approved the new park budget."]
    responses = ["Blue.", "The council approved the park budget."]
    a, b = encoder.encode_segments(prompts, responses), half.encode_segments(prompts, responses)
    for name in ("example", "prompt", "response", "example_mid", "response_mid"):
        got, want = getattr(b, name), getattr(a, name)
        assert got.dtype == np.float32
        assert (np.sum(got * want, axis=1) > 0.999).all(), name  # 0.99996 when written
    fa, fb = features(a), features(b)
    assert np.isfinite(fb).all()
    quality, reward = load_head(DEFAULT_HEAD_DIR, "quality"), load_head(DEFAULT_HEAD_DIR, "reward")
    np.testing.assert_allclose(quality.score(fb), quality.score(fa), atol=0.003)  # scores ~0.08; 4e-4 apart
    np.testing.assert_allclose(reward.score(fb), reward.score(fa), atol=0.03)  # rewards ~0.5; 4e-3 apart
