"""TRL's trainers train on what ``sieve curate --batches`` emits: the code of docs/batches.md, run.

Real rows of every shape (the tests/data slices: hh-rlhf transcript pairs, GPTeacher as
Alpaca, OpenAI ``messages`` and ShareGPT, GSM8K) plus conversations written here for the
shapes the slices lack (system and developer turns in pairs and chats, an implicit prompt,
a tool turn, hh-rlhf text as an instruction, consecutive user turns, an assistant first),
and an operator's force-accept, go through ``sieve curate --batches`` (cheap pipeline, small
shards). Then the "Training with TRL" block of docs/batches.md runs as written, on that batch:
``datasets`` loads it from the manifest, a tiny random Llama with a strict chat template is
saved, and ``SFTTrainer`` and ``DPOTrainer`` train two steps each and evaluate. The template
is applied to every row as TRL applies it, and the losses must be those of a real step.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from quality.overrides import make_override

pytestmark = pytest.mark.models

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
PAGE = "docs/batches.md"
PLACEHOLDER = "sieve-batches/000001-ab12cd34"
SLICES = ("stream_slice.jsonl", "mit_sample.jsonl", "transcripts_sample.jsonl", "hh_pair_structure.jsonl")
CHEAP = {"SIEVE_PIPELINE__SCORING__ENABLED": "false", "SIEVE_PIPELINE__SEMANTIC_DEDUP__ENABLED": "false",
         "SIEVE_BATCHES__SHARD_MAX_ROWS": "40", "HF_HUB_OFFLINE": "1"}


def m(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


LEAP = "Because the Earth takes about 365.25 days to orbit the Sun, so the calendar drifts without them."
HH = "\n\nHuman: What is a leap {}?\n\nAssistant: A year with 366 days.\n\nHuman: Why do we need them?\n\nAssistant:"
TERSE = [m("system", "You are terse."), m("user", "Capital of France?"), m("assistant", "Paris."),
         m("user", "And of Italy?"), m("assistant", "Rome is the capital of Italy.")]
SHAPES = [
    {"id": "pair-system", "prompt": [m("system", "You are a careful astronomy tutor."),
                                     m("user", "Why do leap years exist?")],
     "chosen": LEAP, "rejected": "Leap years exist because calendars are arbitrary and nobody knows."},
    {"id": "pair-system-multiturn", "prompt": [m("system", "Answer briefly."), m("user", "What is a leap year?"),
                                               m("assistant", "A year with 366 days."),
                                               m("user", "Why do we need them at all?")],
     "chosen": [m("assistant", LEAP)], "rejected": [m("assistant", "We do not, they are a tradition only.")]},
    {"id": "pair-developer", "prompt": [m("developer", "Answer like a physics teacher."),
                                        m("user", "Why do we have seasons?")],
     "chosen": "Seasons come from the tilt of the Earth's axis, which changes how directly sunlight hits us.",
     "rejected": "Seasons happen because the Earth gets closer to the Sun in summer."},
    {"id": "pair-implicit", "chosen": [m("user", "Name a prime number above 10."), m("assistant", "11 is one.")],
     "rejected": [m("user", "Name a prime number above 10."), m("assistant", "12 is one.")]},
    {"id": "pair-hh", "prompt": HH.format("year"), "chosen": LEAP, "rejected": "I do not know why that is, sorry."},
    {"id": "pair-hh-published", "chosen": HH.format("day") + " " + LEAP,
     "rejected": HH.format("day") + " No idea, to be honest with you."},
    {"id": "sft-system-multiturn", "messages": TERSE},
    {"id": "sft-system-multiturn-copy", "messages": TERSE},  # an exact duplicate, force-accepted below
    {"id": "sft-developer", "messages": [m("developer", "Reply in one sentence."), m("user", "What do compilers do?"),
                                         m("assistant", "A compiler translates source code into machine code.")]},
    {"id": "sft-tool", "messages": [m("user", "What is the weather in Paris right now?"),
                                    m("assistant", "Let me look that up with the weather tool."),
                                    m("tool", '{"temp_c": 18, "sky": "cloudy"}'),
                                    m("assistant", "It is 18 degrees Celsius and cloudy in Paris right now.")]},
    {"id": "sharegpt-system", "conversations": [
        {"from": "system", "value": "You are a helpful chemistry tutor."},
        {"from": "human", "value": "What is the chemical formula of table salt?"},
        {"from": "gpt", "value": "Table salt is sodium chloride, NaCl."},
        {"from": "human", "value": "And of water?"},
        {"from": "gpt", "value": "Water is H2O: two hydrogen atoms and one oxygen atom."}]},
    {"id": "alpaca-input", "instruction": "Summarize the text in one sentence.",
     "input": "The mitochondrion is an organelle that produces most of the chemical energy a cell needs.",
     "output": "Mitochondria are organelles that make most of a cell's chemical energy."},
    {"id": "sft-hh-transcript", "instruction": HH.format("second"),
     "output": "Leap seconds keep clock time in step with the slowing rotation of the Earth."},
    {"id": "sft-user-user", "messages": [m("user", "Explain what a black hole is."), m("user", "Keep it short."),
                                         m("assistant", "A region where gravity is so strong that no light escapes.")]},
    {"id": "sft-assistant-first", "messages": [m("assistant", "Hello! Ask me anything."), m("user", "Explain tides."),
                                               m("assistant", "Tides come mainly from the Moon's gravity.")]},
]


def training_block() -> tuple[int, str]:
    """The line and the code of the Python block under "## Training with TRL" in docs/batches.md."""
    text = (ROOT / PAGE).read_text(encoding="utf-8")
    found = re.search(r"^## Training with TRL\n(?:(?!^## ).*\n)*?```python\n(?P<code>(?:(?!```).*\n)*)```", text, re.M)
    assert found, f"{PAGE} has no Python block under '## Training with TRL'"
    return text[:found.start("code")].count("\n"), found["code"]


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    """``sieve curate --batches`` over the slices and the shapes, with one force-accept; its outputs."""
    tmp = tmp_path_factory.mktemp("trl")
    lines = [orjson.dumps(s) for s in SHAPES] + [x for n in SLICES for x in (DATA / n).read_bytes().splitlines()]
    (tmp / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    copy = next(s for s in SHAPES if s["id"] == "sft-system-multiturn-copy")
    override = make_override(copy["id"], "force_accept", "a repeated exchange we want twice", "trainer-test",
                             1.8e9, decision_was="rejected", reasons_was=["duplicate_exact"],
                             example={"messages": copy["messages"]})
    (tmp / "overrides.jsonl").write_bytes(orjson.dumps(override.to_record()) + b"\n")
    proc = subprocess.run([sys.executable, "-m", "streams.cli", "curate", "in.jsonl", "--out", "out", "--batches",
                           "sieve-batches", "--overrides", "overrides.jsonl", "--no-progress", "--no-report"],
                          cwd=tmp, env={**_env(), **CHEAP}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (batch,) = json.loads(proc.stdout.strip().splitlines()[-1])["batches"]
    out = {k: [json.loads(x) for x in (tmp / "out" / f"{k}.jsonl").read_text().splitlines()]
           for k in ("accepted", "rejected", "dead_letter")}
    return {"dir": tmp, "manifest": json.loads(Path(batch["manifest"]).read_text()), **out}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def trained(curated):
    """The namespace of the docs' block after it ran on the batch (cwd: the run's folder)."""
    line, code = training_block()
    batch_dir = Path(curated["manifest"]["location"]["dir"])
    assert PLACEHOLDER in code, f"the block of {PAGE} no longer names the placeholder batch {PLACEHOLDER}"
    code = code.replace(PLACEHOLDER, str(batch_dir))
    here = os.getcwd()
    os.chdir(curated["dir"])
    try:
        namespace: dict = {"__name__": "__docs__"}
        exec(compile("\n" * line + code, str(ROOT / PAGE), "exec"), namespace)  # tracebacks name the page's lines
    finally:
        os.chdir(here)
    return namespace


def conversations(kind: str, row: dict) -> list[tuple[list[dict], bool]]:
    """What TRL renders of a row: SFT ``messages``; a pair's prompt (generation prompt), prompt + each side."""
    if kind == "sft":
        return [(row["messages"], False)]
    return [(row["prompt"], True), (row["prompt"] + row["chosen"], False), (row["prompt"] + row["rejected"], False)]


def test_the_template_refuses_what_strict_templates_refuse(trained):
    from jinja2.exceptions import TemplateError

    tok = trained["tokenizer"]
    u, a = m("user", "Hi there."), m("assistant", "Hello.")
    for bad in ([u, u, a], [a, u, a], [u, m("system", "Be nice."), a], [m("developer", "Be nice."), u, a],
                [u, m("tool", "{}"), a], [u, a, a]):
        with pytest.raises(TemplateError, match="roles must alternate"):
            tok.apply_chat_template(bad, tokenize=False)
    assert tok.apply_chat_template([m("system", "S."), u, a, m("tool", "{}"), a], tokenize=False) == (
        "<|system|>S.[SEP]<|user|>Hi there.[SEP]<|assistant|>Hello.[SEP]<|tool|>{}[SEP]<|assistant|>Hello.[SEP]")


def test_every_row_of_the_batch_renders_as_trl_renders_it(curated, trained):
    tok, data, manifest = trained["tokenizer"], trained["data"], curated["manifest"]
    ids, overridden = set(), set()
    for kind, splits in data.items():
        for split, ds in splits.items():
            assert ds.num_rows == manifest["counts"]["by_kind"][kind][split]
            for row in ds:
                ids.add(row["id"])
                overridden |= {row["id"]} if row["overridden"] else set()
                rendered = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=g)
                            for c, g in conversations(kind, row)]
                if kind == "preference":  # TRL takes the completion as what follows the prompt's rendering
                    assert row["prompt"][-1]["role"] == "user", row["id"]
                    assert all(r.startswith(rendered[0]) for r in rendered[1:]), row["id"]
                else:
                    assert row["messages"][-1]["role"] == "assistant", row["id"]
    assert ids == {e["id"] for e in curated["accepted"]}  # every accepted example, nothing else
    by_id = {e["id"]: e for e in curated["accepted"]}
    assert {s["id"] for s in SHAPES} - set(by_id) == {"sft-assistant-first"}
    assert by_id["sft-system-multiturn-copy"]["overridden"]["who"] == "trainer-test"
    assert overridden == {"sft-system-multiturn-copy"}
    assert by_id["sft-user-user"]["details"]["turn_order"] == "merged 2 user turns of the conversation"
    assert manifest["counts"]["overridden"] == 1
    assert sum(manifest["stats"]["transcripts_converted"].values()) >= 20  # the hh-rlhf rows were split into turns
    assert len([f for f in manifest["files"] if f["kind"] == "sft" and f["format"] == "json"]) > 2  # several shards


def test_sft_and_dpo_train_and_evaluate_on_the_batch(curated, trained):
    counts = curated["manifest"]["counts"]["by_kind"]
    assert set(trained["trainers"]) == {"sft", "preference"}
    vocab = len(trained["tokenizer"])
    for kind, trainer in trained["trainers"].items():
        assert trainer.state.global_step == 2, kind
        train = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
        assert len(train) == 2 and all(math.isfinite(x) for x in train), (kind, train)
        assert len(evals) == (1 if counts[kind]["validation"] else 0) and all(math.isfinite(x) for x in evals)
        # a random model's first loss: cross-entropy near ln(vocabulary) on real completion tokens; DPO's is
        # ln 2 exactly when the policy is its own reference, which needs both sides scored
        expected, tolerance = (math.log(vocab), 1.0) if kind == "sft" else (math.log(2), 0.01)
        assert abs(train[0] - expected) < tolerance, (kind, train[0], expected)
    # SFT truncates; DPO drops a pair whose prompt alone fills max_length (long hh-rlhf dialogues), and only those
    sft, dpo = trained["trainers"]["sft"], trained["trainers"]["preference"]
    assert sft.train_dataset.num_rows == counts["sft"]["train"]
    kept, max_length = set(dpo.train_dataset["id"]), dpo.args.max_length
    dropped = [row for row in trained["data"]["preference"]["train"] if row["id"] not in kept]
    assert len(kept) + len(dropped) == counts["preference"]["train"] and len(kept) > len(dropped)
    tok = trained["tokenizer"]
    for row in dropped:
        ids = tok.apply_chat_template(row["prompt"], tokenize=True, return_dict=True, add_generation_prompt=True)
        assert len(ids["input_ids"]) >= max_length, (row["id"], len(ids["input_ids"]))
