"""PII: each kind is found and redacted (or rejected); look-alikes in ordinary text are left alone."""


import pytest

from quality.filters.pii import PiiRedactor
from quality.privacy import luhn_ok, redact
from quality.reasons import Reason
from quality.records import Example, Message, RawRecord


@pytest.mark.parametrize("text, kind, placeholder", [
    ("write to jane.doe+news@example.co.uk today", "email", "[EMAIL]"),
    ("call (555) 123-4567 tomorrow", "phone", "[PHONE]"),
    ("or +44 20 7123 4567 from abroad", "phone", "[PHONE]"),
    ("the server at 81.2.10.254 is down", "ip_address", "[IP_ADDRESS]"),
    ("v6 address 2a00:1450:4001:082a:0000:0000:8a2e:200e here", "ip_address", "[IP_ADDRESS]"),
    ("pay with 4556 8353 3740 6812 please", "credit_card", "[CREDIT_CARD]"),
    ("aws key AKIAABCDEFGHIJKLMNOP leaked", "secret", "[SECRET]"),
    ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789 leaked", "secret", "[SECRET]"),
    ("export OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwx1234", "secret", "[SECRET]"),
])
def test_each_kind_is_redacted(text, kind, placeholder):
    out, counts = redact(text)
    assert counts == {kind: 1}
    assert placeholder in out


def test_assignment_keeps_the_key_name():
    out, counts = redact("api_key = 'a8f9c7d6e5b4a3f2e1d0'")
    assert out == "api_key = '[SECRET]'" and counts == {"secret": 1}


@pytest.mark.parametrize("text", [
    "The total is 10 000 000 dollars, paid on 2023-10-12, and 1,234,567 more.",
    "Area = 50.265482457436691 cm squared",
    "card-like but not Luhn: 4111111111111112",
    "time 12:30:45 and ratio 3:4:5",
    "my password is weak",
    "an @mention and a user@localhost",
])
def test_look_alikes_are_left_alone(text):
    assert redact(text) == (text, {})


def test_luhn():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


def ex(prompt, response):
    return Example("x", "sft", "alpaca", (Message("user", prompt), Message("assistant", response)))


def test_stage_redacts_every_field_and_counts_by_kind():
    stage = PiiRedactor()
    (v,) = stage([ex("mail a@b.com or c@d.org", "call 555-123-4567")])
    assert v.keep
    assert v.scores == {"pii_email": 2.0, "pii_phone": 1.0}
    assert v.replacement.prompt_text == "mail [EMAIL] or [EMAIL]"
    assert v.replacement.response_text == "call [PHONE]"
    assert stage([ex("nothing here", "at all")])[0].replacement is None


def test_reject_policy_gives_the_pii_reason():
    stage = PiiRedactor(policy="reject")
    (v,) = stage([ex("mail a@b.com", "ok")])
    assert v.reason is Reason.PII and v.scores == {"pii_email": 1.0}
    assert stage.stats.rejected[Reason.PII.value] == 1


def test_pipeline_emits_the_redacted_example(cheap_pipeline):
    pipeline = cheap_pipeline()
    (d,) = pipeline.process([RawRecord(b'{"instruction": "Email bob@corp.com about the invoice", '
                                       b'"output": "Done, I wrote to bob@corp.com."}', {"file": "f", "line": 1})])
    assert d.decision == "accepted"
    assert "bob@corp.com" not in str(d.envelope({}))
    assert d.scores["pii_email"] == 2.0
    reject = cheap_pipeline(**{"pii.policy": "reject"})
    (d,) = reject.process([RawRecord(b'{"instruction": "Email bob@corp.com", "output": "ok then"}', {"line": 1})])
    assert d.decision == "rejected" and d.reasons == ["pii"]


def test_bad_settings_name_the_parameter():
    with pytest.raises(ValueError, match="policy"):
        PiiRedactor(policy="mask")
    with pytest.raises(ValueError, match="kinds"):
        PiiRedactor(kinds=["ssn"])


def test_versions_are_not_ip_addresses_and_prefixed_key_names_are_secrets():
    for text in ("Version 1.2.3.4 is out", "upgrade to python 3.11.4.1", "tag v1.2.3.4"):
        assert redact(text) == (text, {})
    assert redact("server at 81.0.0.12 now") == ("server at [IP_ADDRESS] now", {"ip_address": 1})
    out, counts = redact("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYABCDEFGHI1")
    assert out == "aws_secret_access_key = [SECRET]" and counts == {"secret": 1}


def test_bounded_patterns_still_find_what_they_found():
    """The secret and private-key patterns were bounded (a long run like "a-a-a-..." took
    quadratic time, bench/bench_poison.py); what they find is unchanged."""
    text, counts = redact("export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI0K7MDENGbPxRfiCYEXAMPLEKEY1 now")
    assert text == "export AWS_SECRET_ACCESS_KEY=[SECRET] now" and counts == {"secret": 1}
    pem = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nMIIEow\n-----END RSA PRIVATE KEY-----"
    assert redact(f"key:\n{pem}\ndone")[0] == "key:\n[SECRET]\ndone"
    runs = "a-" * 20_000 + " password-" * 2_000 + "-----BEGIN RSA PRIVATE KEY-----\n" * 500
    assert redact(runs) == (runs, {})
