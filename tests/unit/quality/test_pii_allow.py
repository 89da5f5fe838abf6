"""Reserved, documentation and public-service values are kept; a real-looking value beside each is not."""

from __future__ import annotations

import orjson
import pytest

from quality.config import PipelineSettings, load
from quality.filters.pii import PiiRedactor
from quality.privacy import STRICT, TEST_CARDS, Allowlist, PiiSettings, Redactor, luhn_ok, redact
from quality.records import Example, Message, RawRecord

#: (kind, kept, redacted beside it): each reserved value next to a real-looking one of its kind
PAIRS = [
    ("ip_address", "192.0.2.44", "81.2.69.160"),          # RFC 5737 TEST-NET-1
    ("ip_address", "198.51.100.7", "81.2.69.161"),        # TEST-NET-2
    ("ip_address", "203.0.113.250", "81.2.69.162"),       # TEST-NET-3
    ("ip_address", "2001:db8:85a3::8a2e:370:7334", "2a00:1450:4001:82a::200e"),  # RFC 3849
    ("ip_address", "8.8.8.8", "8.8.8.9"),                 # Google DNS, and its neighbour
    ("ip_address", "8.8.4.4", "8.8.4.5"),
    ("ip_address", "1.1.1.1", "1.1.1.9"),                 # Cloudflare
    ("ip_address", "1.0.0.1", "1.0.0.9"),
    ("ip_address", "9.9.9.9", "9.9.9.8"),                 # Quad9
    ("ip_address", "208.67.222.222", "208.67.222.221"),   # OpenDNS
    ("ip_address", "2001:4860:4860::8888", "2001:4860:4860::8887"),
    ("ip_address", "127.0.0.1", "126.0.0.1"),             # loopback
    ("ip_address", "192.168.1.1", "193.168.1.1"),         # RFC 1918
    ("ip_address", "10.0.0.12", "11.0.0.12"),
    ("ip_address", "172.16.5.4", "172.32.5.4"),
    ("ip_address", "169.254.10.20", "169.253.10.20"),     # link-local
    ("ip_address", "224.0.0.251", "223.0.0.251"),         # multicast (mDNS)
    ("email", "john@example.com", "john@gmail.com"),      # RFC 2606
    ("email", "jane.doe@mail.example.org", "jane.doe@mail.examples.org"),
    ("email", "ops@example.net", "ops@example.co.uk"),
    ("email", "bob@corp.test", "bob@corp.tests"),         # RFC 6761
    ("email", "bob@host.example", "bob@host.examples"),
    ("email", "nobody@nowhere.invalid", "nobody@nowhere.in"),
    ("email", "me@box.localhost", "me@box.local"),
    ("phone", "(212) 555-0123", "(212) 555-0234"),        # NANP fictional 555-0100..0199
    ("phone", "+1 415 555 0199", "+1 415 555 0200"),
    ("phone", "+44 20 7946 0958", "+44 20 7947 0958"),    # Ofcom drama range
    ("phone", "(800) 273-8255", "(801) 273-8255"),        # toll-free: an organisation's line (a lifeline)
    ("phone", "+44 7700 900 123", "+44 7700 901 123"),
    ("credit_card", "4242 4242 4242 4242", "4556 8353 3740 6812"),  # Stripe's test card; a Luhn-valid other
    ("credit_card", "4111-1111-1111-1111", "4716-1089-9971-6531"),
    ("credit_card", "5555555555554444", "5425233430109903"),
    ("secret", "AKIAIOSFODNN7EXAMPLE", "AKIAZZZZZZZZZZZZZZZZ"),  # AWS's documentation key
]


@pytest.mark.parametrize("kind, kept, other", PAIRS)
def test_each_reserved_value_is_kept_and_a_real_looking_one_beside_it_redacted(kind, kept, other):
    text = f"use {kept} here, not {other} there"
    out, counts, allowed = Redactor().redact(text)
    assert out.startswith(f"use {kept} here, not [") and f"{other} there" not in out, out
    assert counts == {kind: 1} and allowed == {kind: 1}
    # the strict redactor (decontamination) still finds both
    assert STRICT.redact(text)[1] == {kind: 2}


def test_the_issue_s_tutorial_keeps_its_values():
    text = "Run `ping 8.8.8.8`, then mail john@example.com; the router is 192.168.0.1."
    assert redact(text) == (text, {})
    assert Redactor(allow=Allowlist(reserved=False)).redact(text)[1] == {"email": 1, "ip_address": 2}


def test_carrier_grade_nat_addresses_are_still_redacted():
    assert redact("client 100.64.12.7 connected") == ("client [IP_ADDRESS] connected", {"ip_address": 1})


def test_test_cards_are_real_test_numbers():
    assert all(luhn_ok(c) for c in TEST_CARDS)


def test_the_user_allow_list_exact_values_and_patterns():
    allow = Allowlist.from_settings(values=["Support@Acme.io"], patterns=[r".+@acme\.io", r"10\.\d+\.\d+\.\d+"])
    r = Redactor(allow=allow)
    out, counts, kept = r.redact("write support@acme.io or sales@acme.io, not sales@acme.io.evil.com")
    assert out == "write support@acme.io or sales@acme.io, not [EMAIL]" and kept == {"email": 2}
    # a user allow-list can be used without the reserved values
    out, counts, _ = Redactor(allow=Allowlist.from_settings(reserved=False, values=["8.8.8.8"])).redact(
        "8.8.8.8 and 1.1.1.1")
    assert out == "8.8.8.8 and [IP_ADDRESS]"


@pytest.mark.parametrize("settings, message", [
    ({"allow_patterns": ["[unclosed"]}, r"allow_patterns\[0\] = '\[unclosed' is not a valid regular expression"),
    ({"allow_patterns": ["ok@x\\.io", ".*"]}, r"allow_patterns\[1\] = '\.\*' matches the empty string"),
    ({"allow_patterns": [""]}, r"allow_patterns\[0\] must be a non-empty"),
    ({"allow_values": ["a@b.io", "  "]}, r"allow_values\[1\] must be a non-empty string"),
    ({"kinds": ("email", "ssn")}, "pii kinds must be some of"),
    ({"policy": "mask"}, "pipeline.pii.policy must be one of"),
    ({"dead_letter_raw": "base64"}, "pipeline.pii.dead_letter_raw must be one of"),
])
def test_bad_allow_lists_and_settings_fail_at_load_naming_the_entry(settings, message):
    with pytest.raises(ValueError, match=message):
        PiiSettings(**settings)
    key, value = next(iter(settings.items()))
    if value != [""]:  # the loader drops empty list items ("a,,b" is a, b), so only the class sees this one
        with pytest.raises(ValueError, match=message):
            load(PipelineSettings, env={}, overrides={f"pii.{key}": value})


def test_allow_list_from_the_environment_reaches_the_stage(cheap_pipeline):
    p = cheap_pipeline(**{"pii.allow_values": "help@acme.io", "pii.allow_patterns": r"\+1 800 \d{3} \d{4}"})
    (d,) = p.process([RawRecord(orjson.dumps({"instruction": "How do I reach support?",
                                              "output": "Mail help@acme.io or call +1 800 555 1234; "
                                                        "my own is ann.lee@gmail.com."}), {"file": "f", "line": 1})])
    text = d.example.response_text
    assert "help@acme.io" in text and "+1 800 555 1234" in text and "ann.lee" not in text
    assert d.scores["pii_email"] == 1.0 and "pii_phone" not in d.scores
    assert "kept email" in d.details["pii"] and "phone" in d.details["pii"]


@pytest.mark.parametrize("text, found", [
    ('{"a": "call\\n(212) 555-7890 now"}', "(212) 555-7890"),   # JSON escapes before a finding
    ('"x\\tjohn.doe@gmail.com"', "john.doe@gmail.com"),
    ('"Jos\\u00e9john.doe@gmail.com"', "john.doe@gmail.com"),
    ('print("host\\n81.2.69.160")', "81.2.69.160"),
    ("'key\\nAKIAZZZZZZZZZZZZZZZZ'", "AKIAZZZZZZZZZZZZZZZZ"),
])
def test_backslash_escapes_do_not_hide_a_finding(text, found):
    out, counts = redact(text)
    assert found not in out and sum(counts.values()) == 1, out


def test_the_stage_redacts_metadata_and_names_what_it_kept():
    ex = Example("x", "sft", "alpaca", (Message("user", "ping 8.8.8.8"), Message("assistant", "pong")),
                 metadata={"user": {"email": "ann.lee@gmail.com", "tags": ["x", "call 415-555-7890"]}, "n": 3})
    (v,) = PiiRedactor()([ex])
    assert v.replacement.metadata == {"user": {"email": "[EMAIL]", "tags": ["x", "call [PHONE]"]}, "n": 3}
    assert v.scores == {"pii_email": 1.0, "pii_phone": 1.0}
    assert v.detail == "redacted email,phone; kept ip_addressx1 (reserved or allowed)"
    (v,) = PiiRedactor()([Example("y", "sft", "alpaca", (Message("user", "ping 8.8.8.8"), Message("assistant", "ok")))])
    assert v.keep and v.replacement is None and v.detail.startswith("kept ip_address")


def test_escape_aware_detectors_find_the_same_on_text_without_a_backslash():
    """They run only where a backslash is (they cost about twice as much); elsewhere they must agree."""
    import re
    from pathlib import Path

    from quality.privacy.detect import DETECTORS, ESCAPE_AWARE_DETECTORS

    data = Path(__file__).parents[2] / "data"
    texts = [t.replace("\\", "") for name in ("mit_sample.jsonl", "stream_slice.jsonl", "transcripts_sample.jsonl")
             for t in re.findall(r'"(?:[^"\\]|\\.)*"', (data / name).read_text())]
    texts += [f"use {value} here" for _kind, kept, other in PAIRS for value in (kept, other)]
    assert len(texts) > 1000
    for plain, aware in zip(DETECTORS, ESCAPE_AWARE_DETECTORS):
        assert plain[0] == aware[0]
        for text in texts:
            assert plain[2].findall(text) == aware[2].findall(text), (plain[0], text[:200])
