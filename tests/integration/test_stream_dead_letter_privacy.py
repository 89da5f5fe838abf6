"""Through a real broker: a dead letter with an e-mail in its payload reaches the dead-letter topic redacted.

`sieve run` with the defaults, then with the opt-in ``SIEVE_PIPELINE__PII__DEAD_LETTER_RAW=keep``;
the output topics are read back as bytes, so nothing is judged on a re-parsed copy.
"""

from __future__ import annotations

import hashlib
import uuid

import orjson
import pytest

from stream_utils import Names, WorkerProcess, create_topics, produce, read_outputs, slice_lines, wait_for_outputs

pytestmark = pytest.mark.integration

MAIL, PHONE = "john.doe@gmail.com", "(415) 555-7890"
PAYLOADS = [
    b'{"id":"x1","foo":"john.doe@gmail.com \xe2\x80\xa6"}',                               # the issue's own
    b'{"id":"x2","messages":[{"role":"john.doe@gmail.com","content":"hi"}]}',             # error quotes it
    b'{"id":"x3","instruction":"call\\n(415) 555-7890 or mail\\njohn.doe@gmail.com",',    # invalid JSON
    b'{"id":"x4","instruction":"\xff write to john.doe@gmail.com","output":"ok"}',       # not UTF-8
    b'{"id":"x5","instruction":"ping 8.8.8.8 and mail john@example.com","output":7}',     # reserved values stay
    b'{"id":"ok","instruction":"Tell john.doe@gmail.com the meeting moved.","output":"Done, I told them."}',
]


def run(kafka, tmp_path, extra_env: dict[str, str]) -> list:
    names = Names(f"sieve-it-{uuid.uuid4().hex}", f"sieve-it-group-{uuid.uuid4().hex}")
    create_topics(names, kafka.bootstrap)
    payloads = PAYLOADS + slice_lines()[:5]
    produce(kafka.bootstrap, f"{names.base}.raw", payloads)
    worker = WorkerProcess({**names.env(kafka.bootstrap), **extra_env}, tmp_path / f"{names.base}.log", tmp_path)
    try:
        worker.wait_ready()
        wait_for_outputs(kafka.bootstrap, names.outputs, len(payloads), worker)
        assert worker.terminate() == 0, worker.log()[-3000:]
    finally:
        worker.kill()
    outputs = read_outputs(kafka.bootstrap, names.outputs)
    assert sorted(o.envelope["origin"]["offset"] for o in outputs) == list(range(len(payloads)))
    return outputs


def test_dead_letters_on_the_topic_are_redacted_by_default(kafka, tmp_path):
    outputs = run(kafka, tmp_path, {})
    for o in outputs:  # every byte Sieve wrote, on every output topic
        assert b"john.doe" not in o.value and b"555-7890" not in o.value, o.envelope
    dead = {o.envelope["origin"]["offset"]: o.envelope for o in outputs if o.topic.endswith(".dead-letter")}
    assert sorted(dead) == [0, 1, 2, 3, 4]
    assert dead[0]["raw"] == '{"id":"x1","foo":"[EMAIL] \u2026"}' and dead[0]["scores"] == {"pii_email": 1.0}
    assert dead[0]["raw_sha256"] == hashlib.sha256(PAYLOADS[0]).hexdigest()
    assert "[EMAIL]" in dead[1]["error"] and dead[1]["reasons"] == ["schema_error"]
    assert "\\n[PHONE]" in dead[2]["raw"] and "\\n[EMAIL]" in dead[2]["raw"]
    assert dead[3]["raw"] is None and dead[3]["raw_bytes"] == len(PAYLOADS[3]) and "not UTF-8" in dead[3]["raw_omitted"]
    assert "ping 8.8.8.8 and mail john@example.com" in dead[4]["raw"]
    accepted = [o.envelope for o in outputs if o.envelope["id"] == "ok"]
    assert accepted and accepted[0]["scores"]["pii_email"] == 1.0


def test_keeping_the_raw_payload_is_an_explicit_opt_in(kafka, tmp_path):
    outputs = run(kafka, tmp_path, {"SIEVE_PIPELINE__PII__DEAD_LETTER_RAW": "keep"})
    dead = {o.envelope["origin"]["offset"]: o.envelope for o in outputs if o.topic.endswith(".dead-letter")}
    assert dead[0]["raw"] == PAYLOADS[0].decode() and MAIL in dead[1]["error"]
    assert dead[3]["raw_encoding"] == "base64"
    # examples are still redacted: the opt-in is about the dead letters' payload only
    assert all(MAIL.encode() not in o.value for o in outputs if not o.topic.endswith(".dead-letter"))
    assert orjson.loads(orjson.dumps(dead[2]))["raw"].count(PHONE) == 1
