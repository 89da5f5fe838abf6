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
           "Hvannadalshnúkur [ˈkʰvanːaˌtalsˌn̥uːkʏr̥], Xhosa [ǁʰosa], ɓ ɗ ʄ ɠ ʛ, ʈ ɖ ɳ ɭ ʂ ʐ, ɸ β θ ð ʃ ʒ ç ʝ x ɣ χ ʁ ħ ʕ")
    check(EncodingFilter(), sft("Pronounce these", ipa), None)
