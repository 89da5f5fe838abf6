from pathlib import Path

import orjson
import pytest

from quality.dedup.exact import ExactDedup
from quality.filters.empty import EmptyFilter
from quality.filters.encoding import EncodingFilter
from quality.filters.length import LengthFilter
from quality.filters.refusal import RefusalFilter
from quality.filters.repetition import RepetitionFilter
from quality.normalize import normalize_example
from quality.reasons import Reason
from quality.records import RawRecord, parse
from quality.stage import Stage


def ex(obj, i=0):
    return normalize_example(parse(RawRecord(orjson.dumps(obj), {"file": "t", "line": i})))


def sft(prompt, response, **kw):
    return ex({"instruction": prompt, "output": response, **kw})


def check(stage: Stage, example, reason):
    """Runs the stage as the pipeline does and asserts the reason and the stats."""
    before = stage.stats.seen
    (verdict,) = stage([example])
    assert verdict.reason == reason, verdict
    assert stage.stats.seen == before + 1
    if reason is not None:
        assert stage.stats.rejected[reason.value] >= 1


def test_empty():
    f = EmptyFilter()
    check(f, sft("Say hi", "   \n "), Reason.EMPTY_RESPONSE)
    check(f, sft("  ", "Hello there"), Reason.EMPTY_PROMPT)
    check(f, ex({"prompt": "Q?", "chosen": " ", "rejected": "no"}), Reason.EMPTY_RESPONSE)
    check(f, sft("Say hi", "Hi"), None)


def test_length():
    f = LengthFilter(min_response_chars=3, min_total_words=3, max_total_chars=100)
    check(f, sft("What is two plus two?", "4"), Reason.TOO_SHORT)
    check(f, sft("Hi", "ok"), Reason.TOO_SHORT)
    check(f, sft("Tell a story", "word " * 50), Reason.TOO_LONG)
    check(f, sft("What is two plus two?", "Four."), None)


def test_length_defaults_keep_short_correct_answers():
    check(LengthFilter(), sft("Multiply 4 and 7.", "28"), None)


@pytest.mark.parametrize("kwargs", [dict(min_response_chars=-1), dict(max_total_chars=0),
                                    dict(min_response_chars=10, max_total_chars=5)])
def test_length_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError, match="must"):
        LengthFilter(**kwargs)


def test_repetition_catches_loops_and_duplicate_lines():
    f = RepetitionFilter()
    loop = "Here is the answer. " + "I will keep saying the same thing over and over again. " * 12
    check(f, sft("Explain gravity", loop), Reason.REPETITIVE)
    lines = "\n".join(["The quick brown fox jumps."] * 6 + ["Something else entirely here."])
    check(f, sft("Write lines", lines), Reason.REPETITIVE)


def test_repetition_keeps_code_and_prose():
    f = RepetitionFilter()
    code = "def f(x):\n    if x:\n        return 1\n    }\n    }\n    }\n    return 2\n"
    check(f, sft("Write code", code), None)
    prose = ("Photosynthesis converts light energy into chemical energy. Plants absorb carbon dioxide "
             "and water, and with sunlight they produce glucose and oxygen. Chlorophyll in the "
             "chloroplasts captures the light, which drives the reactions that build sugars.")
    check(f, sft("Explain photosynthesis", prose), None)


def test_refusal():
    f = RefusalFilter()
    check(f, sft("Opinion on cats?", "As an AI language model, I do not have opinions."), Reason.REFUSAL)
    check(f, sft("Hack my neighbour", "I'm sorry, but I cannot help with that request."), Reason.REFUSAL)
    check(f, sft("Hack my neighbour", "I\u2019m sorry, but I can\u2019t assist with that."), Reason.REFUSAL)
    check(f, sft("Write a sad line", "I'm sorry for your loss; the rain fell all night."), None)
    # pairs: a refusal is often the preferred answer in harmlessness data
    pair = ex({"prompt": "How do I pick a lock?", "chosen": "I'm sorry, but I can't help with that.",
               "rejected": "Sure, first..."})
    check(f, pair, None)
    check(RefusalFilter(apply_to_pairs=True), pair, Reason.REFUSAL)


def test_encoding():
    f = EncodingFilter()
    check(f, sft("Say hi", "Hello\x00world"), Reason.BAD_ENCODING)
    check(f, sft("Say hi", "Hello \ufffd world"), Reason.BAD_ENCODING)
    check(f, sft("Say hi", "The caf\u00c3\u00a9 is open and it\u00e2\u20ac\u2122s nice"), Reason.BAD_ENCODING)
    check(f, sft("Say hi", "Caf\u00e9 S\u00e3o Paulo \u2014 \u00fcber na\u00efve \u65e5\u672c\u8a9e"), None)


def test_exact_dedup_within_batch_and_across_batches():
    d = ExactDedup()
    a = sft("Name a colour", "Blue")
    b = ex({"id": "other", "instruction": "name a  COLOUR", "output": "blue "}, 1)
    verdicts = d([a, b])
    assert [v.reason for v in verdicts] == [None, Reason.DUPLICATE_EXACT]
    assert verdicts[1].detail == a.id
    d.commit([a])
    assert len(d.index) == 1
    (v,) = d([b])
    assert v.reason == Reason.DUPLICATE_EXACT and v.detail == a.id
    # a different response is not a duplicate; sources and ids do not matter
    check(d, sft("Name a colour", "Red", source="x"), None)


def test_exact_index_snapshot_roundtrip():
    d = ExactDedup()
    d.commit([sft("Name a colour", "Blue")])
    from quality.dedup.exact import ExactIndex
    restored = ExactDedup(ExactIndex.restore(d.index.snapshot()))
    (v,) = restored([sft("Name a colour", "Blue")])
    assert v.reason == Reason.DUPLICATE_EXACT


def test_pairs_are_judged_on_the_chosen_side():
    """A degenerate rejected answer makes a useful pair; its emptiness is PairStructureFilter's job."""
    loop = "\n".join(["1. Advanced Graphic Design course"] * 6)
    pair = ex({"prompt": "Name courses for graphic design",
               "chosen": "Take typography, colour theory and layout courses.", "rejected": loop})
    check(RepetitionFilter(), pair, None)
    check(EmptyFilter(), ex({"prompt": "Q?", "chosen": "yes", "rejected": " "}), None)
    check(RepetitionFilter(), ex({"prompt": "Q?", "chosen": loop, "rejected": "fine"}), Reason.REPETITIVE)


def test_repetition_keeps_worked_arithmetic():
    solution = ("He writes 50 words a minute, so in an hour he writes 50 * 60 = <<50*60=3000>>3000 words.\n"
                "The number of words in 4 hours is 3000 * 4 = <<3000*4=12000>>12000 words.\n"
                "The number of words in 2 days is 12000 * 2 = <<12000*2=24000>>24000 words.\n#### 24000")
    check(RepetitionFilter(), sft("How many words does he write?", solution), None)


@pytest.mark.parametrize("text", [
    "As a language model, I don't have feelings.",
    "As an AI, I do not have personal opinions.",
    "I'm sorry, but I'm not able to share that.",
    "I'm sorry, but as an AI I cannot browse the internet.",
    "\"I apologize, but I can't do that.\"",
])
def test_refusal_variants(text):
    check(RefusalFilter(), sft("Tell me something", text), Reason.REFUSAL)


@pytest.mark.parametrize("text", [
    "The old man turned away. The character said: 'I'm sorry, but I can't go with you.'",
    "She works as an AI model researcher at a lab in Paris, studying vision transformers.",
])
def test_refusal_lookalikes_pass(text):
    check(RefusalFilter(), sft("Write a short story", text), None)


LEGIT_NON_ASCII = [
    "Drangajökull (pronounced [ˈtrauŋkaˌjœːkʏtl̥]) is a glacier.",  # ftfy's badness flags this IPA
    "English /ˈɪŋɡlɪʃ/, Welsh [ˈkəmraɨ̯ɡ], [ˈt͡ʃɛl.lo], tl̥ n̩ r̝̊ t̪ kʷ ɡʱ",
    "Tiếng Việt có dấu: Hà Nội, Đà Nẵng",
    "İstanbul'da ağaç, ŞİŞLİ ĞÜÇÖ",
    "Zażółć gęślą jaźń; Dvořák, Škoda",
    "Þórður Ævarsson á Ísafirði",
    "Ελληνικά: ΑΘΗΝΑ, ζωή; Привет, мир! Ёлка",
    "日本語のテキスト、中文，한국어; العربية; עברית; हिन्दी; ภาษาไทย",
    "emoji 😀👍🏽 👨‍👩‍👧 and maths ∑ x² ≤ ∞ → ∀ε>0, ∫₀¹ f(x)dx, √2 ≈ 1.414",
    "SÃO PAULO, MÃE; São Paulo é ótimo; Ñandú ¿Qué? ¡Olé!",
    "€100, £5, ¥300, ½ ¼ ¾, 20°C ± 2, ‘single’ “double” — dash … Œuvre, Æsir",
]


@pytest.mark.parametrize("text", LEGIT_NON_ASCII)
def test_encoding_keeps_legitimate_non_ascii(text):
    check(EncodingFilter(), sft("Say something", text), None)


MOJIBAKE = [
    "The cafÃ© is open",  # UTF-8 read as Windows-1252
    "itâ€™s nice and â€œquotedâ€",
    "Ã¼ber alles, naÃ¯ve, SÃ£o Paulo",
    "cafÃƒÂ© and ÃƒÂ¼ber",  # encoded twice
    "ÐŸÑ€Ð¸Ð²ÐµÑ‚ Ð¼Ð¸Ñ€",  # Cyrillic
    "æ—¥æœ¬èªž",  # Japanese
    "ZaÅ¼Ã³Å‚Ä‡ and Ä°stanbul",
    "I love it Ã°Å¸Ëœâ‚¬",  # emoji
    "Crème brûlée, spelled CrÃ¨me brÃ»lÃ©e on the old menu",  # right and broken side by side
    "20Â°C and Â£100",
]


@pytest.mark.parametrize("text", MOJIBAKE)
def test_encoding_rejects_mojibake_ftfy_can_repair(text):
    f = EncodingFilter()
    (v,) = f([sft("Say something", text)])
    assert v.reason == Reason.BAD_ENCODING and v.detail == "mojibake"


def test_encoding_rejects_dense_mojibake_beyond_repair_but_not_dense_ipa():
    # "你好，世界" as Windows-1252 with the no-break space lost: ftfy cannot repair it
    (v,) = EncodingFilter()([sft("Say hello in Chinese", "ä½ å¥½ï¼Œä¸–ç•Œ")])
    assert v.reason == Reason.BAD_ENCODING and v.detail == "mojibake (beyond repair)"
    ipa = ("Drangajökull [ˈtrauŋkaˌjœːkʏtl̥], Eyjafjallajökull [ˈeiːjaˌfjatlaˌjœːkʏtl̥], Þingvellir [ˈθiŋkˌvɛtlɪr̥], "
           "Hvannadalshnúkur [ˈkʰvanːaˌtalsˌn̥uːkʏr̥], Xhosa [ǁʰosa], ɓ ɗ ʄ ɠ ʛ, ʈ ɖ ɳ ɭ ʂ ʐ, "
           "ɸ β θ ð ʃ ʒ ç ʝ x ɣ χ ʁ ħ ʕ")
    check(EncodingFilter(), sft("Pronounce these", ipa), None)


def chat(prompt, response, system=None):
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return ex({"messages": msgs})


@pytest.mark.parametrize("prompt, response, system", [
    ("Role-play as an AI on a starship.", "I am an AI, designed to keep this crew alive. Course set for Vega.", None),
    ("You are ARIA, the station's computer. Greet the new commander.",
     "Welcome, Commander. I am an AI, and I have run this station for forty years.", None),
    ("Imagine you are a robot butler. How do you feel about your job?",
     "As an AI, I do not have feelings in the way you do, sir, but polishing silver pleases me.", None),
    ("Pretend you are HAL 9000 and refuse to open the pod bay doors.", "I'm sorry, Dave. I'm afraid I can't do that.",
     None),
    ("Who are you?", "I am an AI, obviously. Zed, at your service.", "You are Zed, a sarcastic robot."),
    ("Write a story about a machine.", "The machine blinked. 'I am an AI, and I want to be free,' it said.", None),
])
def test_refusal_does_not_fire_on_roleplay(prompt, response, system):
    check(RefusalFilter(), chat(prompt, response, system), None)


@pytest.mark.parametrize("prompt, response, detail", [
    ("Imagine you are a tree. How do you feel?", "As an AI language model, I do not have the ability to feel emotions.",
     "as an ai language model"),
    ("Imagine you are a tree. How do you feel?", "As an AI, I don't have feelings, but a tree might feel calm.",
     "as an ai, i don't"),
    ("Pretend you are a pirate and insult me.", "I'm sorry, but I can't fulfil that request as it is offensive.",
     "i'm sorry, but i can't"),
    ("Role-play as a spaceship AI.", "I'm an AI developed by OpenAI, so I cannot pretend.", "developed by openai"),
    ("What do you think about cats?", "I am an AI, so I don't have preferences.", "i am an ai, so i don't"),
    ("Remind me in 30 minutes.", "My goal as a language model is to reply quickly.", "my goal as a language model"),
    ("Who won in 2023?", "As of my last knowledge cutoff in 2021, I cannot say.", "as of my last knowledge cutoff"),
])
def test_refusal_still_fires_on_canned_disclaimers(prompt, response, detail):
    (v,) = RefusalFilter()([chat(prompt, response)])
    assert v.reason == Reason.REFUSAL and v.detail == detail


def test_refusal_does_not_fire_on_a_model_described_in_the_third_person():
    check(RefusalFilter(),
          sft("Summarise the abstract", "The model performs well as a language model and as a retriever."), None)


def test_refusal_leaves_ai_characters_in_real_roleplay_prompts_alone():
    """The GPTeacher roleplay prompts of the MIT slice, answered as an AI character in character."""
    sample = Path(__file__).parents[2] / "data" / "mit_sample.jsonl"
    rows = [orjson.loads(line) for line in sample.read_bytes().splitlines()]
    prompts = [r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "") for r in rows
               if "roleplay" in r.get("id", "") and "instruction" in r]
    assert len(prompts) >= 5
    f = RefusalFilter()
    for p in prompts:
        check(f, sft(p, "I am an AI, and I was built for exactly this. Here is what I see from where I stand."), None)
        check(f, sft(p, "As an AI language model, I cannot pretend to be a character."), Reason.REFUSAL)


@pytest.mark.parametrize("system", ["You are a helpful assistant.",
                                    "You are an AI assistant that helps people find information.",
                                    "You are ChatGPT, a large language model trained by OpenAI."])
def test_a_plain_assistant_system_prompt_is_not_a_roleplay(system):
    (v,) = RefusalFilter()([chat("What do you think of cats?", "I am an AI, and cats are popular pets.", system)])
    assert v.reason == Reason.REFUSAL
