"""Every accepted example renders through a strict chat template, as TRL's trainers apply it.

The tokenizer is the bundled MiniLM one (nothing downloaded) with the Llama 2 / Mistral
template, which raises on any order but [system] user assistant user ... The pipeline's
accepted outputs, transcripts converted from hh-rlhf and every other shape, are rendered
the way TRL does: SFT ``messages`` whole; a pair's prompt with ``add_generation_prompt``,
then prompt + chosen and prompt + rejected, whose text must start with the prompt's.
What ``turn_order`` rejected must be what the template refuses (or a transcript left whole).
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from quality.filemode import curate

pytestmark = pytest.mark.models

DATA = Path(__file__).parents[1] / "data"

#: The Llama 2 / Mistral template of the transformers docs: strict alternation, optional system first.
STRICT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- '<s>' }}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif %}"
    "{%- if message['role'] == 'user' %}"
    "{{- '[INST] ' + (system + '\\n\\n' if loop.first and system is defined else '') + message['content'] "
    "+ ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + '</s>' }}"
    "{%- else %}{{- raise_exception('Only user and assistant roles are supported, with the exception of an "
    "initial optional system message!') }}{%- endif %}"
    "{%- endfor %}")

HH = "\n\nHuman: What is a leap year?\n\nAssistant: A year with 366 days.\n\nHuman: Why do we need them?\n\nAssistant:"
ANSWER = "Because the Earth takes about 365.25 days to orbit the Sun, so the calendar drifts without them."
SHAPES = [
    {"id": "hh-pair", "prompt": HH, "chosen": ANSWER, "rejected": "I do not know why that is, sorry."},
    {"id": "hh-published", "chosen": HH + " " + ANSWER, "rejected": HH + " No idea, to be honest with you."},
    {"id": "hh-sft", "instruction": HH.replace("leap year", "leap second"),
     "output": "Leap seconds keep clock time in step with the slowing rotation of the Earth."},
    {"id": "chatml", "messages": [{"role": "user", "content": "<|im_start|>system\nBe precise.<|im_end|>\n"
                                   "<|im_start|>user\nWhat is a leap year?<|im_end|>\n<|im_start|>assistant\n"},
                                  {"role": "assistant", "content": ANSWER}]},
    {"id": "llama2", "prompt": "<s>[INST] <<SYS>>\nBe precise.\n<</SYS>>\n\nWhat is a leap year? [/INST] A year "
                               "with 366 days. </s><s>[INST] Why do we need them? [/INST]",
     "chosen": ANSWER, "rejected": "They are not needed for anything at all."},
    {"id": "alpaca", "instruction": "### Instruction:\nExplain leap years.\n\n### Input:\nIn one paragraph.\n\n"
                                    "### Response:\n", "output": ANSWER},
    {"id": "vicuna", "prompt": "USER: What is a leap year? ASSISTANT: A year with 366 days.</s>USER: Why? ASSISTANT:",
     "chosen": ANSWER, "rejected": "No reason at all, they are just a tradition."},
    {"id": "user-user", "messages": [{"role": "user", "content": "Explain leap years."},
                                     {"role": "user", "content": "Keep it short, please."},
                                     {"role": "assistant", "content": ANSWER}]},
    {"id": "assistant-first", "messages": [{"role": "assistant", "content": "Hello! Ask me anything you like."},
                                           {"role": "user", "content": "Explain leap years."},
                                           {"role": "assistant", "content": ANSWER}]},
    {"id": "system-late", "messages": [{"role": "user", "content": "Explain leap years."},
                                       {"role": "system", "content": "Be precise."},
                                       {"role": "assistant", "content": ANSWER}]},
    {"id": "prompt-ends-assistant", "prompt": [{"role": "user", "content": "Explain leap years."},
                                               {"role": "assistant", "content": "Sure, here it comes."}],
     "chosen": ANSWER, "rejected": "They are not needed for anything at all."},
    {"id": "sides-doubled", "prompt": "Explain leap years.",
     "chosen": [{"role": "assistant", "content": "Here is why."}, {"role": "assistant", "content": ANSWER}],
     "rejected": "They are not needed for anything at all."},
]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from models.encoder import default_model_path

    tok = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    tok.chat_template = STRICT_TEMPLATE
    return tok


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    from quality.config import PipelineSettings, load
    from streams.assemble import build_pipeline

    tmp = tmp_path_factory.mktemp("chat")
    src = tmp / "in.jsonl"
    lines = [orjson.dumps(s) for s in SHAPES]
    for name in ("transcripts_sample.jsonl", "mit_sample.jsonl", "stream_slice.jsonl", "hh_pair_structure.jsonl"):
        lines += (DATA / name).read_bytes().splitlines()
    src.write_bytes(b"\n".join(lines) + b"\n")
    cheap = load(PipelineSettings, env={}, overrides={"scoring.enabled": False, "semantic_dedup.enabled": False})
    curate(build_pipeline(cheap), [src], tmp / "out")
    return {k: [json.loads(x) for x in (tmp / "out" / f"{k}.jsonl").read_text().splitlines()]
            for k in ("accepted", "rejected")}


def render(tok, example) -> list[str]:
    """What TRL renders: SFT messages; a pair's prompt (with the generation prompt) and prompt + each side."""
    if "messages" in example:
        return [tok.apply_chat_template(example["messages"], tokenize=False)]
    prompt = tok.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)
    out = [prompt]
    for side in ("chosen", "rejected"):
        full = tok.apply_chat_template(example["prompt"] + example[side], tokenize=False)
        assert full.startswith(prompt), (prompt, full)
        out.append(full)
    return out


def test_every_accepted_example_renders_and_no_transcript_is_nested(tokenizer, outputs):
    accepted = outputs["accepted"]
    by_id = {e["id"]: e for e in accepted}
    assert {"hh-pair", "hh-published", "hh-sft", "chatml", "llama2", "alpaca", "vicuna", "user-user",
            "sides-doubled"} <= set(by_id)
    converted = 0
    for env in accepted:
        texts = render(tokenizer, env["example"])
        if env.get("converted"):
            converted += 1
            prompt = texts[0]
            for marker in ("\n\nHuman:", "\n\nAssistant:", "<|im_start|>", "[INST] [INST]", "### Instruction", "USER:"):
                assert marker not in prompt, (env["id"], marker)
    assert converted >= 20  # the hh-rlhf rows of the slices, and the synthetic shapes
    assert render(tokenizer, by_id["hh-pair"]["example"])[0] == (
        "<s>[INST] What is a leap year? [/INST] A year with 366 days.</s>[INST] Why do we need them? [/INST]")
    assert by_id["user-user"]["details"]["turn_order"] == "merged 2 user turns of the conversation"


def test_what_turn_order_rejects_the_template_refuses(tokenizer, outputs):
    from jinja2.exceptions import TemplateError

    bad = [e for e in outputs["rejected"] if e["reasons"][0] == "bad_turn_order"]
    assert {"assistant-first", "system-late", "prompt-ends-assistant"} <= {e["id"] for e in bad}
    for env in bad:
        if "markers, not converted" in env["details"]["turn_order"]:
            assert "\n\nHuman:" in env["example"]["prompt"][0]["content"]  # left whole: a nested format
            continue
        with pytest.raises(TemplateError):
            render(tokenizer, env["example"])
