"""Decontamination: exact and near copies are rejected naming the item; templated prompts pass."""

import os

import orjson
import pytest

from quality.decont.ngram import BenchmarkIndex, BenchmarkItem, Decontaminator, bench_tokens, load_benchmarks
from quality.reasons import Reason
from quality.records import Example, Message

GSM = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
       "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 "
       "per fresh duck egg. How much in dollars does she make every day at the farmers' market?")
RECIPE = ("I like to host guests at my home from time to time, and I am gathering recipes of different "
          "dishes and drinks to keep things interesting. I am interested in trying some Danish dishes. "
          "Can you give me a recipe for Koldskål?")


def ex(i, prompt, response="Sure."):
    return Example(str(i), "sft", "alpaca", (Message("user", prompt), Message("assistant", response)))


@pytest.fixture
def bench_file(tmp_path):
    path = tmp_path / "bench.jsonl"
    rows = [{"id": "gsm8k/1", "benchmark": "gsm8k", "text": GSM},
            {"id": "hh/21", "benchmark": "alpaca_eval", "text": RECIPE},
            {"id": "mt/1", "benchmark": "mt_bench", "text": "What is the capital of France?"}]
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    return path


def test_exact_copy_is_contaminated_and_names_the_item(bench_file):
    stage = Decontaminator([bench_file])
    (v,) = stage([ex(1, "Solve this: " + GSM)])
    assert v.reason is Reason.CONTAMINATED and v.detail == "gsm8k/1"
    assert v.scores["contamination"] == 1.0
    assert stage.stats.rejected[Reason.CONTAMINATED.value] == 1


def test_near_copy_with_a_few_words_changed_is_contaminated(bench_file):
    near = GSM.replace("How much in dollars", "How many dollars")
    (v,) = Decontaminator([bench_file])([ex(1, near)])
    assert v.reason is Reason.CONTAMINATED and v.scores["contamination"] >= 0.8


def test_templated_prompt_sharing_boilerplate_passes(bench_file):
    other = RECIPE.replace("Danish dishes. Can you give me a recipe for Koldskål?",
                           "Peruvian dishes. Could you tell me how to make Lomo Saltado at home tonight?")
    (v,) = Decontaminator([bench_file])([ex(1, other)])
    assert v.keep and 0.4 < v.scores["contamination"] < 0.8
    numbers = GSM.replace("16", "20").replace("three", "five").replace("four", "two").replace("$2", "$3")
    (v,) = Decontaminator([bench_file])([ex(2, numbers)])
    assert v.keep


def test_short_items_match_only_exactly(bench_file):
    stage = Decontaminator([bench_file])
    v1, v2 = stage([ex(1, "what is the capital of FRANCE"),
                    ex(2, "What is the capital of France? Explain its history.")])
    assert v1.reason is Reason.CONTAMINATED and v1.detail == "mt/1"
    assert v2.keep


def test_response_is_checked_only_when_asked(bench_file):
    item = ex(1, "Give me a maths problem about eggs.", GSM)
    assert Decontaminator([bench_file])([item])[0].keep
    assert Decontaminator([bench_file], check_response=True)([item])[0].reason is Reason.CONTAMINATED


def test_text_files_and_directories_load(tmp_path, bench_file):
    (tmp_path / "plain.txt").write_text("first item text here\n\nsecond item\n", encoding="utf-8")
    items = load_benchmarks([tmp_path])
    assert {i.id for i in items} >= {"gsm8k/1", "plain:1", "plain:3"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_benchmarks([bad])
    with pytest.raises(FileNotFoundError, match="nope"):
        load_benchmarks([tmp_path / "nope.jsonl"])


def test_reload_when_files_change(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_bytes(orjson.dumps({"id": "a", "text": GSM}) + b"\n")
    now = [0.0]
    stage = Decontaminator([path], reload_interval_s=10, clock=lambda: now[0])
    probe = ex(1, RECIPE)
    assert stage([probe])[0].keep
    path.write_bytes(orjson.dumps({"id": "r", "text": RECIPE}) + b"\n")
    os.utime(path, ns=(1, 1))
    now[0] = 5.0
    assert stage([probe])[0].keep  # not checked yet
    now[0] = 11.0
    v = stage([probe])[0]
    assert v.reason is Reason.CONTAMINATED and v.detail == "r" and stage.reloads == 1


def test_score_is_share_of_item_ngrams():
    index = BenchmarkIndex([BenchmarkItem("i", "b", " ".join(f"w{k}" for k in range(20)))], ngram=8)
    # the prompt holds the first 15 words: 8 of the item's 13 8-grams
    item, score = index.best(" ".join(f"w{k}" for k in range(15)))
    assert item == 0 and score == pytest.approx(8 / 13)
    assert bench_tokens("Hello, World-42!") == ["hello", "world", "42"]


def test_bad_settings_name_the_parameter():
    with pytest.raises(ValueError, match="threshold"):
        Decontaminator(threshold=0)
    with pytest.raises(ValueError, match="reload_interval_s"):
        Decontaminator(reload_interval_s=-1)
