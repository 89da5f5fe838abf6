"""Transcript-style prompts become turns, per convention; quoted dialogues and scripts do not."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from quality.config import PipelineSettings, load
from quality.records import CONVENTIONS, Example, Message, ParseFailure, RawRecord, Unconverted, parse, split_transcript
from quality.reasons import Reason

ORIGIN = {"file": "t", "line": 1}


def parsed(obj, **kw) -> Example:
    ex = parse(RawRecord(orjson.dumps(obj), ORIGIN), **kw)
    assert isinstance(ex, Example), ex
    return ex


def turns(msgs) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in msgs]


HH = "\n\nHuman: What is a leap year?\n\nAssistant: A year with 366 days.\n\nHuman: Why?\n\nAssistant:"
EXPECTED = [("user", "What is a leap year?"), ("assistant", "A year with 366 days."), ("user", "Why?")]


@pytest.mark.parametrize("name, text, expected", [
    ("anthropic", HH, EXPECTED),
    ("chatml", "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is a leap year?<|im_end|>\n"
               "<|im_start|>assistant\nA year with 366 days.<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n"
               "<|im_start|>assistant\n", [("system", "Be brief.")] + EXPECTED),
    ("llama2", "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhat is a leap year? [/INST] A year with 366 days. </s>"
               "<s>[INST] Why? [/INST]", [("system", "Be brief.")] + EXPECTED),
    ("alpaca", "Below is an instruction that describes a task. Write a response that appropriately completes the "
               "request.\n\n### Instruction:\nWhat is a leap year?\n\n### Input:\nAnswer in one line.\n\n"
               "### Response:\n",
     [("system", "Below is an instruction that describes a task. Write a response that appropriately completes the "
                 "request."), ("user", "What is a leap year?\n\nAnswer in one line.")]),
    ("alpaca", "### Human: What is a leap year?\n### Assistant: A year with 366 days.\n### Human: Why?\n### Assistant:",
     EXPECTED),
    ("vicuna", "A chat between a curious user and an artificial intelligence assistant. USER: What is a leap year? "
               "ASSISTANT: A year with 366 days.</s>USER: Why? ASSISTANT:",
     [("system", "A chat between a curious user and an artificial intelligence assistant.")] + EXPECTED),
])
def test_each_convention_becomes_turns_in_a_pair_prompt(name, text, expected):
    ex = parsed({"prompt": text, "chosen": "Because of the orbit.", "rejected": "No idea."})
    assert turns(ex.messages) == expected
    assert ex.converted == {"prompt": name} and not ex.unconverted
    assert turns(ex.chosen) == [("assistant", "Because of the orbit.")]


def test_instruction_data_converts_too_and_the_response_stays_last():
    ex = parsed({"instruction": HH, "output": "The orbit takes 365.25 days."})
    assert turns(ex.messages) == EXPECTED + [("assistant", "The orbit takes 365.25 days.")]
    assert ex.kind == "sft" and ex.converted == {"prompt": "anthropic"}
    ex = parsed({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": HH},
                              {"role": "assistant", "content": "Orbit."}]})
    assert turns(ex.messages) == [("system", "Be brief.")] + EXPECTED + [("assistant", "Orbit.")]
    ex = parsed({"conversations": [{"from": "human", "value": HH}, {"from": "gpt", "value": "Orbit."}]})
    assert turns(ex.messages)[:3] == EXPECTED and ex.converted == {"prompt": "anthropic"}


def test_hh_rlhf_as_published_a_pair_of_whole_transcripts_without_a_prompt():
    chosen = HH + " Because the orbit takes 365.25 days."
    rejected = HH + " I don't know."
    ex = parsed({"chosen": chosen, "rejected": rejected})
    assert turns(ex.messages) == EXPECTED
    assert turns(ex.chosen) == [("assistant", "Because the orbit takes 365.25 days.")]
    assert turns(ex.rejected) == [("assistant", "I don't know.")] and ex.rejected_prompt is None
    assert ex.converted == {"chosen": "anthropic", "rejected": "anthropic"}
    # plain strings without a prompt are still a schema error, which now says what would do
    out = parse(RawRecord(orjson.dumps({"chosen": "yes", "rejected": "no"}), ORIGIN))
    assert isinstance(out, ParseFailure) and out.reason == Reason.SCHEMA_ERROR and "transcripts" in out.error


@pytest.mark.parametrize("text", [
    # a prompt that quotes a transcript after an instruction (LLMBar's "Continue the given dialogue:")
    "Continue the given dialogue:\n\n\n\nHuman: What causes a yeast infection\n\nAssistant:",
    # markers mid-line are text
    "Summarize this chat. Human: hi Assistant: hello Human: bye",
    # one kind of marker only: a question, not a transcript
    "Human: what is love?",
    # free-form labels are not a convention
    "User: Hi, I would like to book a flight.\nAssistant: Where to?\nUser: San Francisco.",
    "Q: Why did the chicken cross the road?\nA: To get to the other side.",
    "Customer: my order is late.\n\nAgent: Sorry about that!\n\nCustomer: When will it arrive?",
    # markdown headings that are not role headings
    "### Input validation\nCheck every field.\n\n### Response codes\nUse 400 for bad input.",
    "# Notes\n\n### Instruction:\nnot at the start\n\n### Response:\n",
    "Translate this log: USER: hi ASSISTANT: hello",
])
def test_text_that_is_not_a_whole_transcript_is_left_alone(text):
    assert split_transcript(text, tuple(CONVENTIONS)) is None
    ex = parsed({"prompt": text, "chosen": "a", "rejected": "b"})
    assert turns(ex.messages) == [("user", text.strip())] or turns(ex.messages) == [("user", text)]
    assert not ex.converted and not ex.unconverted


def test_a_response_that_quotes_a_dialogue_is_never_split():
    script = "\n\nHuman: Hello.\n\nAssistant: Hi! How can I help?\n\nHuman: Tell me a joke."
    ex = parsed({"instruction": "Write a short chat between a human and an assistant.", "output": script})
    assert turns(ex.messages) == [("user", "Write a short chat between a human and an assistant."),
                                  ("assistant", script)]
    ex = parsed({"prompt": "Write a chat.", "chosen": script, "rejected": "No."})
    assert turns(ex.chosen) == [("assistant", script)] and not ex.converted


def test_markers_that_do_not_alternate_are_left_whole_and_named():
    text = "\n\nHuman: Here is a chat log:\n\nHuman: hi\n\nAssistant: hello\n\nSummarize it.\n\nAssistant:"
    found = split_transcript(text, ("anthropic",))
    assert isinstance(found, Unconverted) and found.convention == "anthropic" and "turn 2 is user" in found.why
    ex = parsed({"prompt": text, "chosen": "a", "rejected": "b"})
    assert turns(ex.messages) == [("user", text)] and not ex.converted
    assert "anthropic markers, not converted" in ex.unconverted["prompt"]


def test_the_generation_slot_is_dropped_but_a_side_keeps_an_empty_answer():
    assert split_transcript("\n\nHuman: hi\n\nAssistant:", ("anthropic",)) == ("anthropic", [("user", "hi")])
    assert split_transcript("\n\nHuman: hi\n\nAssistant:", ("anthropic",), slot=False) == \
        ("anthropic", [("user", "hi"), ("assistant", "")])


def test_conventions_are_a_setting_and_an_unknown_one_is_refused():
    assert load(PipelineSettings, env={}).transcripts == tuple(CONVENTIONS)
    ex = parsed({"prompt": HH, "chosen": "a", "rejected": "b"}, transcripts=())
    assert turns(ex.messages) == [("user", HH)] and not ex.converted
    ex = parsed({"prompt": HH, "chosen": "a", "rejected": "b"}, transcripts=("chatml",))
    assert not ex.converted
    with pytest.raises(ValueError, match="unknown convention.*'sharegpt'.*known"):
        load(PipelineSettings, env={}, overrides={"transcripts": "anthropic,sharegpt"})
    assert load(PipelineSettings, env={}, overrides={"transcripts": ""}).transcripts == ()


def test_the_envelope_records_the_conversion(cheap_pipeline):
    p = cheap_pipeline()
    raws = [RawRecord(orjson.dumps({"id": "t", "prompt": HH, "chosen": "Because of the orbit of the Earth.",
                                    "rejected": "No idea at all, sorry."}), ORIGIN),
            RawRecord(orjson.dumps({"id": "p", "prompt": "What is a leap year?",
                                    "chosen": "A year with 366 days in it.", "rejected": "No idea at all."}), ORIGIN)]
    converted, plain = [d.envelope(p.versions()) for d in p.process(raws)]
    assert converted["decision"] == "accepted" and converted["converted"] == {"prompt": "anthropic"}
    assert [m["role"] for m in converted["example"]["prompt"]] == ["user", "assistant", "user"]
    assert "converted" not in plain
    assert converted["versions"]["transcripts"] == list(CONVENTIONS)


def test_real_hh_rlhf_rows_decide_as_labelled(cheap_pipeline):
    lines = (Path(__file__).parents[2] / "data" / "transcripts_sample.jsonl").read_bytes().splitlines()
    decisions = cheap_pipeline().process([RawRecord(line, {"file": "s", "line": i}) for i, line in enumerate(lines)])
    for line, d in zip(lines, decisions):
        row = orjson.loads(line)
        expected = row["metadata"]["expected"]
        env = d.envelope({})
        if expected == "bad_turn_order":
            assert d.reasons[:1] == ["bad_turn_order"], (d.id, d.reasons)
            continue
        assert "bad_turn_order" not in d.reasons, (d.id, d.details)
        if expected == "converted":
            assert env["converted"] == {"prompt": "anthropic"}, d.id
            roles = [m["role"] for m in env["example"]["prompt"]]
            assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"], (d.id, roles)
            assert not any(m["content"].startswith(("Human:", "Assistant:")) for m in env["example"]["prompt"]
                           if m["role"] == "user"), d.id
            # the response is never split, even when it starts with "Human:" (an hh-rlhf artifact)
            assert env["example"]["chosen"] == [{"role": "assistant", "content": row["chosen"].strip()}] or \
                d.decision == "rejected", d.id
        else:
            assert "converted" not in env and len(env["example"]["prompt"]) == 1, d.id


def test_adversarial_transcripts_still_parse():
    """Long runs of marker pieces: every pattern is linear (timings in bench/bench_poison.py)."""
    for unit in ("\n\nHuman: ", "\n\nAssistant:", "<|im_start|>user\n", "<|im_end|>", "[INST] ", "</s>", " " * 7,
                 "### Instruction:\n", "USER: ", "<<SYS>>"):
        text = ("Human: " if unit.startswith("\n") else "") + unit * 5000
        for start in ("\n\nHuman: x", "<|im_start|>user\nx", "[INST] x", "### Instruction:\nx", "USER: x"):
            out = split_transcript(start + text, tuple(CONVENTIONS))
            assert out is None or isinstance(out, (tuple, Unconverted))
    ex = parsed({"prompt": "<s>[INST] q [/INST] a" + " </s>" * 20000 + "<s>[INST] z [/INST]", "chosen": "a",
                 "rejected": "b"})
    assert turns(ex.messages) == [("user", "q"), ("assistant", "a"), ("user", "z")]
    assert Message("user", "q") == ex.messages[0]
