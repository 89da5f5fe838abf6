"""RepetitionFilter: loops are rejected (each rule names itself in the detail), structure is not."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from quality.build import build_stages
from quality.config import PipelineSettings
from quality.dedup.semantic import SemanticDedupSettings
from quality.filters.common import FilterSettings
from quality.filters.repetition import RepetitionFilter
from quality.normalize import normalize_example
from quality.reasons import Reason
from quality.records import RawRecord, parse
from quality.scoring.gate import ScoringSettings


def sft(prompt: str, response: str):
    record = {"instruction": prompt, "output": response}
    return normalize_example(parse(RawRecord(orjson.dumps(record), {"file": "t", "line": 0})))


def verdict(prompt: str, response: str, stage: RepetitionFilter | None = None):
    stage = stage or RepetitionFilter()
    (v,) = stage([sft(prompt, response)])
    return v


ANSWER = ("Photosynthesis is the process by which green plants make their food. They take in carbon dioxide "
          "from the air and water from the soil. Using energy from sunlight, chlorophyll drives reactions that "
          "turn these into glucose and oxygen. The oxygen is released into the air.")
SENTENCE = "Chlorophyll absorbs mostly red and blue light and reflects green."
PARAGRAPH = ("Plants are vital to life on Earth because they produce oxygen and form the base of most food "
             "chains. Without them, animals would have nothing to eat.")

LOOPS = {
    "sentence back to back": (ANSWER + " " + " ".join([SENTENCE] * 3), "sentence_run=3x"),
    "short sentence back to back": (ANSWER + " I hope this helps! I hope this helps! I hope this helps! "
                                    "I hope this helps!", "sentence_run=4x"),
    "sentence appended to a good answer": (ANSWER + "\n\n" + " ".join([SENTENCE] * 6), "sentence_run=6x"),
    "sentence restated in three paragraphs": ("\n\n".join([SENTENCE + " Light matters.", ANSWER + " " + SENTENCE,
                                                           SENTENCE]),
                                              "sentence_repeated=3x"),
    "paragraph four times": ("\n\n".join([PARAGRAPH] * 4), "line_run=4x"),
    "whole answer restated once": (ANSWER + "\n\n" + PARAGRAPH + "\n\n" + ANSWER + "\n\n" + PARAGRAPH,
                                   "restated_frac=0.50"),
    "list items restated": ("Tips:\n1. Sleep well before the exam.\n2. Review your notes every day.\n"
                            "3. Sleep well before the exam.\n4. Eat a good breakfast in the morning.\n"
                            "5. Review your notes every day.\n6. Sleep well before the exam.",
                            "list_item_restated=3/6"),
    "bullet block repeated": ("Ideas:\n" + "\n".join(["- Plant a small herb garden", "- Visit the local library",
                                                      "- Cook a new recipe"] * 3), "list_item_restated=6/9"),
    "renumbered list repeated": ("\n".join(f"{i}. {x}" for i, x in enumerate(["Visit the old harbour",
                                 "Walk along the city walls", "Try the fish market"], 1)) + "\n"
                                 + "\n".join(f"{i}. {x}" for i, x in enumerate(["Visit the old harbour",
                                 "Walk along the city walls", "Try the fish market"], 1)), "list_item_restated=3/6"),
    "headed block repeated": ("\n".join(["Steps:", "- Mix the flour and water well",
                                         "- Knead the dough for ten minutes"] * 3), "paragraph_restated_frac="),
    "line over and over": (ANSWER + "\n" + "\n".join(["Thank you for reading this answer today."] * 5), "line_run=5x"),
    "symbol line over and over": ("\n".join([",\\,\\,\\,\\,\\,\\"] * 40), "line_run=40x"),
    "phrase without breaks": (ANSWER + " and the light" * 12, "phrase_loop="),
    "list cycling in one line": ("Breaking Bad, The Sopranos, The Wire, " + "The Sopranos, The Wire, " * 12,
                                 "phrase_loop="),
    "one sentence with one word changed": (" ".join(
        f"The teams will also work together to create an inclusive environment for all {who}, regardless of "
        f"gender, race or identity." for who in ("players", "fans", "staff", "players")), "sentence_variants=4"),
    "Chinese sentence back to back": ("北京是中国的首都。" + "我很喜欢这个城市。" * 4, "sentence_run=4x"),
    "the same word forty times": ("Here is my answer: " + "the " * 40, "phrase_loop=1_distinct_words"),
    "code line pasted over and over": ("```python\n" + "import numpy as np\n" * 6 + "```", "line_run=6x"),
}


@pytest.mark.parametrize("name", LOOPS)
def test_loops_are_rejected_naming_the_rule(name):
    text, detail = LOOPS[name]
    v = verdict("Explain photosynthesis.", text)
    assert v.reason == Reason.REPETITIVE and v.detail.startswith(detail), (name, v.detail)


def test_verse_restated_more_than_half_is_a_loop():
    verse = "Oh baby baby oh\nYou are my sunshine\nThe night is long\nAnd I am gone"
    v = verdict("Write a song about love.", "\n\n".join([verse] * 3))
    assert v.reason == Reason.REPETITIVE and v.detail.startswith("restated_frac=")
    v = verdict("Write a song.", "\n".join(["Oh baby baby oh, come back to me"] * 4))
    assert v.reason == Reason.REPETITIVE and v.detail == "line_run=4x"


CHORUS = ("Hello, hello, spring is here,\nClap your hands and give a cheer,\nHello, hello, spring is here,\n"
          "Sing it loud for all to hear.")
STRUCTURE = {
    "song with labelled chorus": ("Write lyrics about the sea.", "\n\n".join([
        "[Verse 1]\nThe tide comes in at morning\nThe gulls are on the wing", "[Chorus]\n" + CHORUS,
        "[Verse 2]\nThe nets are full by evening\nThe harbour lights are on", "[Chorus]\n" + CHORUS,
        "[Bridge]\nWhen storms roll in we hold the line", "[Chorus]\n" + CHORUS])),
    "song without labels or a song prompt": ("Something for the spring assembly, please.", "\n\n".join([
        "Sunshine on the playground,\nFlowers in the sun,\nWe are here together,\nLearning is such fun.", CHORUS,
        "Birds are in the treetops,\nBees are buzzing round,\nRain drops on the windows,\nMaking happy sound.",
        CHORUS, CHORUS])),
    "poem with a refrain": ("Write a poem about rain.", "Rain on the rooftops, rain on the lane,\n"
                            "Do not go gentle, come again, come again.\nThe fields are thirsty, the rivers are low,\n"
                            "Do not go gentle, come again, come again.\nThe children are waiting with buckets in tow,\n"
                            "Do not go gentle, come again, come again."),
    "short function, unfenced": ("Write a function that prints a box.", "def box(n):\n    print('+' + '-' * n + '+')\n"
                                 "    print('|' + ' ' * n + '|')\n    print('|' + ' ' * n + '|')\n"
                                 "    print('|' + ' ' * n + '|')\n    print('+' + '-' * n + '+')"),
    "code shown before and after a change": ("Port it to Godot 4.", "In Godot 3:\n\nextends KinematicBody\n\n"
                                             "var velocity = Vector3()\n\nfunc _ready():\n\nvelocity.x = 1\n\n"
                                             "In Godot 4:\n\nextends CharacterBody3D\n\nvar velocity = Vector3()\n\n"
                                             "func _ready():\n\nvelocity.x = 1"),
    "sql inserts": ("Insert three users.", "INSERT INTO users (name, age) VALUES ('Ann', 30);\n"
                    "INSERT INTO users (name, age) VALUES ('Bob', 25);\n"
                    "INSERT INTO users (name, age) VALUES ('Cid', 41);"),
    "json records": ("Give three products as JSON.", "[\n" + ",\n".join(
        f'  {{\n    "name": "{n}",\n    "category": "Office supplies and stationery",\n    "in_stock": true\n  }}'
        for n in ("Pen", "Pencil", "Stapler")) + "\n]"),
    "html cells": ("HTML table of plans.", "<table>\n<tr>\n<th>Feature</th>\n<th>Basic</th>\n<th>Pro</th>\n"
                   "<th>Team</th>\n</tr>\n"
                   "<tr>\n<td>Cloud backup</td>\n<td>Yes</td>\n<td>Yes</td>\n<td>Yes</td>\n</tr>\n</table>"),
    "markdown truth table": ("Truth table of XOR.", "| A | B | A XOR B |\n|---|---|---|\n| 0 | 0 | 0 |\n| 0 | 1 | 1 |\n"
                             "| 1 | 0 | 1 |\n| 1 | 1 | 0 |"),
    "plain truth table": ("Truth table of p -> q.", "p q p->q\nT T T\nT F F\nF T T\nF F T"),
    "multiplication table": ("Multiplication table of 7.", "\n".join(f"7 x {i} = {7 * i}" for i in range(1, 13))),
    "templated enumerated list": ("Name capitals.", "\n".join(
        f"{i}. The capital of {c} is {k}." for i, (c, k) in enumerate(
            [("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Poland", "Warsaw"), ("Greece", "Athens")],
            1))),
    "classification list": ("Classify each review.", "1. Positive\n2. Negative\n3. Positive\n4. Positive\n5. Neutral"),
    "same items under different headings": ("A three-day plan.", "\n\n".join(
        f"{day}:\n- 30 minutes of brisk walking\n- 3 sets of 10 push-ups"
        for day in ("Monday", "Wednesday", "Friday"))),
    "one item per heading": ("A rest plan.", "\n".join(f"{day}:\n- Rest day and light stretching"
                                                      for day in ("Monday", "Tuesday", "Wednesday"))),
    "sub-lists repeating items under each parent": ("A three-day meal plan.",
                                                    "1. Monday\n   - Breakfast: oatmeal with fresh berries\n"
                                                    "   - Lunch: grilled chicken salad\n2. Tuesday\n"
                                                    "   - Breakfast: oatmeal with fresh berries\n"
                                                    "   - Lunch: lentil soup\n"
                                                    "3. Wednesday\n   - Breakfast: oatmeal with fresh berries"),
    "Chinese prose": ("介绍北京", "北京是中国的首都。它有悠久的历史。长城和故宫都很有名。每年有很多游客来参观。"),
    "gsm8k solution": ("How many clips?", "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                       "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"),
    "dialogue": ("Write a dialogue.", "Customer: Hi, I'd like to return this jacket.\n"
                 "Clerk: Sure, do you have the receipt?\n"
                 "Customer: Yes, here it is.\nClerk: Thank you. Would you like a refund?\nCustomer: A refund, please.\n"
                 "Clerk: Thank you. Here is your refund."),
    "contract with blank signature lines": ("Draft a signature block.", "Signed by the Customer: "
                                            + "_ " * 30 + "\nSigned by the Company: " + "_ " * 30),
}


@pytest.mark.parametrize("name", STRUCTURE)
def test_structure_is_kept(name):
    prompt, text = STRUCTURE[name]
    v = verdict(prompt, text)
    assert v.reason is None, (name, v.detail)


def test_stats_count_each_verdict():
    stage = RepetitionFilter()
    stage([sft("q", ANSWER), sft("q", "\n\n".join([PARAGRAPH] * 4))])
    assert stage.stats.seen == 2 and stage.stats.passed == 1 and stage.stats.rejected["repetitive"] == 1


def test_min_repeats_and_restated_share_are_settings():
    text = ANSWER + " " + " ".join([SENTENCE] * 3)
    assert verdict("q", text, RepetitionFilter(min_repeats=4)).reason is None
    twice = ANSWER + "\n\n" + PARAGRAPH + "\n\n" + ANSWER + "\n\n" + PARAGRAPH
    assert verdict("q", twice, RepetitionFilter(max_restated_frac=0.6)).reason is None
    assert RepetitionFilter(min_repeats=4).version()["min_repeats"] == 4


@pytest.mark.parametrize("kwargs, name", [
    (dict(min_repeats=1), "min_repeats"), (dict(min_repeats=2.5), "min_repeats"),
    (dict(min_repeats=True), "min_repeats"),
    (dict(min_sentence_words=0), "min_sentence_words"), (dict(code_min_run=1), "code_min_run"),
    (dict(symbol_min_run=0), "symbol_min_run"), (dict(max_restated_frac=0.0), "max_restated_frac"),
    (dict(verse_max_restated_frac=1.5), "verse_max_restated_frac"), (dict(min_loop_frac=-0.1), "min_loop_frac"),
    (dict(max_list_restated_frac=0), "max_list_restated_frac"),
])
def test_bad_settings_are_refused_by_name(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RepetitionFilter(**kwargs)


@pytest.mark.parametrize("filters, name", [
    (FilterSettings(repetition_min_repeats=1), "min_repeats"),
    (FilterSettings(repetition_max_restated_frac=0.0), "max_restated_frac"),
])
def test_pipeline_settings_reach_the_filter_and_are_validated(filters, name):
    settings = dataclasses.replace(PipelineSettings(), filters=filters, scoring=ScoringSettings(enabled=False),
                                   semantic_dedup=SemanticDedupSettings(enabled=False))
    with pytest.raises(ValueError, match=name):
        build_stages(settings)
    good = dataclasses.replace(settings, filters=FilterSettings(repetition_min_repeats=5))
    (stage,) = [s for s in build_stages(good) if s.name == "repetition"]
    assert stage.min_repeats == 5


def test_a_labelled_chorus_sung_over_and_over_is_a_loop():
    chorus = "Chorus:\nOh the sea, the sea, she calls to me\nAcross the waves so wild and free"
    v = verdict("Write a sea shanty.", "Verse 1:\nThe tide comes in at morning light\n\n" + "\n\n".join([chorus] * 10))
    assert v.reason == Reason.REPETITIVE and v.detail.startswith("restated_frac=")
