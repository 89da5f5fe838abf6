"""Dead letters carry no unredacted PII by default: payload, error text and example; `keep` is the opt-in."""

from __future__ import annotations

import hashlib
import json

import orjson
import pytest

from quality.envelope import DEAD_LETTER_RAW_BYTES, Decision, encode_decision
from quality.filemode import curate
from quality.pipeline import Pipeline
from quality.privacy import DeadLetterPrivacy
from quality.records import RawRecord
from quality.stage import KEEP, Stage

MAIL, PHONE = "john.doe@gmail.com", "(415) 555-7890"
ORIGIN = {"file": "f", "line": 1}


def dead_letters_of(out) -> list[dict]:
    return [json.loads(line) for line in (out / "dead_letter.jsonl").read_text().splitlines()]


def test_file_mode_dead_letters_are_redacted_and_counted(tmp_path, cheap_pipeline):
    lines = [
        b'{"id":"x1","foo":"john.doe@gmail.com and (415) 555-7890"}',                  # the unknown_format
        b'{"id":"x2","instruction":"mail john.doe@gmail.com", "output": 5}',          # schema_error
        b'{"id":"x3","messages":[{"role":"john.doe@gmail.com","content":"hi"}]}',      # the error quotes the role
        b'{"id":"x4","instruction":"call me\\n(415) 555-7890 or write\\njohn.doe@gmail.com",',  # invalid JSON
        b'{"id":"x5","instruction":"ping 8.8.8.8 at john@example.com", "output": []}',  # reserved values stay
        b'{"id":"x6","instruction":"\xff john.doe@gmail.com","output":"x"}',          # not UTF-8: dropped
        b'{"id":"ok","instruction":"Say hi to john.doe@gmail.com","output":"Hi there, John!"}',
    ]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    summary = curate(cheap_pipeline(), [src], tmp_path / "out")
    written = (tmp_path / "out" / "dead_letter.jsonl").read_text() + (tmp_path / "out" / "accepted.jsonl").read_text()
    assert "john.doe" not in written and "555-7890" not in written
    dead = {f"x{e['origin']['line']}": e for e in dead_letters_of(tmp_path / "out")}
    assert [dead[i]["reasons"][0] for i in ("x1", "x2", "x3", "x4", "x5", "x6")] == [
        "unknown_format", "schema_error", "schema_error", "invalid_json", "schema_error", "invalid_utf8"]
    assert dead["x1"]["raw"] == '{"id":"x1","foo":"[EMAIL] and [PHONE]"}'
    assert dead["x1"]["scores"] == {"pii_email": 1.0, "pii_phone": 1.0}
    assert dead["x1"]["raw_sha256"] == hashlib.sha256(lines[0]).hexdigest() and dead["x1"]["raw_bytes"] == len(lines[0])
    assert "[EMAIL]" in dead["x3"]["error"] and "unknown role" in dead["x3"]["error"]
    assert "\\n[PHONE]" in dead["x4"]["raw"] and "\\n[EMAIL]" in dead["x4"]["raw"]
    assert "8.8.8.8 at john@example.com" in dead["x5"]["raw"] and "scores" in dead["x5"] and not dead["x5"]["scores"]
    assert dead["x6"]["raw"] is None and "not UTF-8" in dead["x6"]["raw_omitted"]
    assert dead["x6"]["raw_sha256"] == hashlib.sha256(lines[5]).hexdigest()
    # summary.json counts every redaction by kind: the accepted example's and the dead letters'
    assert summary["pii_redactions"] == {"email": 6, "phone": 2}  # x3: its payload and its error


def test_keep_is_the_opt_in_and_drop_keeps_no_payload(tmp_path, cheap_pipeline):
    line = b'{"id":"x1","foo":"john.doe@gmail.com"}'
    bad = b'{"id":"x2","instruction":"\xff john.doe@gmail.com"}'
    src = tmp_path / "in.jsonl"
    src.write_bytes(line + b"\n" + bad + b"\n")
    curate(cheap_pipeline(**{"pii.dead_letter_raw": "keep"}), [src], tmp_path / "keep")
    kept = dead_letters_of(tmp_path / "keep")
    assert kept[0]["raw"] == line.decode() and not kept[0]["scores"] and "raw_sha256" not in kept[0]
    assert kept[1]["raw_encoding"] == "base64"
    curate(cheap_pipeline(**{"pii.dead_letter_raw": "drop"}), [src], tmp_path / "drop")
    for env in dead_letters_of(tmp_path / "drop"):
        assert env["raw"] is None and "drop" in env["raw_omitted"] and len(env["raw_sha256"]) == 64
    # the PII stage off does not un-redact dead letters
    curate(cheap_pipeline(**{"pii.enabled": False}), [src], tmp_path / "off")
    assert "john.doe" not in (tmp_path / "off" / "dead_letter.jsonl").read_text()


class Exploding(Stage):
    """Raises on the example before PII runs: its processing_error dead letter holds the unredacted example."""

    name = "exploding"
    reasons = frozenset()

    def check(self, ex):
        if "boom" in ex.response_text:
            raise RuntimeError(f"boom on {ex.prompt_text}")
        return KEEP


def test_a_processing_error_s_example_and_exception_text_are_redacted():
    p = Pipeline([Exploding()])
    (d,) = p.process([RawRecord(orjson.dumps({"instruction": f"write to {MAIL}", "output": "boom"}), ORIGIN)])
    env = orjson.loads(encode_decision(d, p.versions())[1])
    assert env["reasons"] == ["processing_error"] and "[EMAIL]" in env["error"]
    assert MAIL not in orjson.dumps(env).decode()
    assert env["example"]["messages"][0]["content"] == "write to [EMAIL]"


def test_stand_ins_stay_redacted_and_a_decision_without_privacy_gets_the_default():
    # an accepted decision whose envelope cannot be written: its unencodable stand-in carries the raw payload
    d = Decision("i", "accepted", [], {"bad": object()}, ORIGIN,  # type: ignore[dict-item]
                 raw=f'{{"note": "{MAIL}", "x": 1e999}}'.encode())
    out, data = encode_decision(d, {})
    env = orjson.loads(data)
    assert out.decision == "dead_letter" and MAIL not in data.decode() and "[EMAIL]" in env["raw"]
    d = Decision("j", "dead_letter", ["invalid_json"], {}, ORIGIN, raw=MAIL.encode(), error=f"bad: {MAIL}",
                 privacy=DeadLetterPrivacy("keep"))
    assert orjson.loads(encode_decision(d, {})[1])["raw"] == MAIL


def test_a_long_payload_is_redacted_before_it_is_cut_and_cut_on_a_character():
    pad = "é" * (DEAD_LETTER_RAW_BYTES // 2 - 10)  # 2 bytes each: the cut lands inside what follows
    raw = (pad + f" {MAIL} " + "z" * 100).encode()
    d = Decision("k", "dead_letter", ["too_large"], {}, ORIGIN, raw=raw, error="too big")
    env = orjson.loads(encode_decision(d, {})[1])
    assert env["raw_truncated"] is True and env["raw_encoding"] == "utf-8"
    assert len(env["raw"].encode()) <= DEAD_LETTER_RAW_BYTES and "john" not in env["raw"]
    assert env["raw"].startswith(pad) and env["raw_bytes"] == len(raw)


@pytest.mark.parametrize("mode", ["redact", "keep", "drop"])
def test_every_mode_writes_an_envelope_that_reads_back(mode):
    for raw in (b"\xff\xfe", "text \ud800", MAIL.encode(), None, b""):
        d = Decision("m", "dead_letter", ["invalid_utf8"], {}, ORIGIN, raw=raw, error="e \ud800",
                     privacy=DeadLetterPrivacy(mode))
        out, data = encode_decision(d, {})
        assert orjson.loads(data)["id"] == "m"
