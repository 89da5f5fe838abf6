"""`sieve review` and `sieve curate --overrides` on the command line: usage errors exit 2 saying
what to do; an override written by the CLI is the record the page would write."""

from __future__ import annotations

import json

import pytest

from quality.filemode import curate
from streams.cli import main


@pytest.fixture
def out_dir(tmp_path, mit_sample, cheap_pipeline):
    curate(cheap_pipeline(), [mit_sample], tmp_path / "out")
    return tmp_path / "out"


def first(out_dir, decision):
    name = {"accepted": "accepted.jsonl", "rejected": "rejected.jsonl"}[decision]
    return json.loads((out_dir / name).read_text().splitlines()[0])


def test_usage_errors_exit_2_and_say_what_to_do(out_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SIEVE_REVIEW_TOKEN", raising=False)
    assert main(["review"]) == 2
    assert "give either DIR (file mode) or --kafka" in capsys.readouterr().err
    assert main(["review", str(tmp_path)]) == 2
    assert "no accepted.jsonl or rejected.jsonl" in capsys.readouterr().err
    assert main(["review", str(out_dir), "--host", "0.0.0.0"]) == 2
    assert "not a loopback address" in capsys.readouterr().err
    assert main(["review", str(out_dir), "--token", "short"]) == 2
    assert "at least 16 characters" in capsys.readouterr().err
    acc = first(out_dir, "accepted")["id"]
    assert main(["review", str(out_dir), "--force-reject", acc]) == 2
    assert "--note is required" in capsys.readouterr().err
    rej = first(out_dir, "rejected")["id"]
    assert main(["review", str(out_dir), "--force-reject", rej, "--note", "x"]) == 2
    assert "force_reject overrules an accepted decision, but" in capsys.readouterr().err
    assert not (out_dir / "overrides.jsonl").exists()
    (tmp_path / "x.jsonl").write_text("")
    assert main(["curate", str(tmp_path / "x.jsonl"), "--out", str(out_dir), "--overrides",
                 str(tmp_path / "none.jsonl")]) == 2
    assert "--overrides" in capsys.readouterr().err


def test_an_override_from_the_cli_is_applied_by_the_next_curate(out_dir, mit_sample, capsys, monkeypatch):
    acc = first(out_dir, "accepted")
    assert main(["review", str(out_dir), "--force-reject", acc["id"], "--note", "a customer's name",
                 "--who", "ana"]) == 0
    record = json.loads(capsys.readouterr().out)["override"]
    assert (record["id"], record["action"], record["who"], record["decision_was"]) == (
        acc["id"], "force_reject", "ana", "accepted")
    for k, v in {"SIEVE_PIPELINE__SCORING__ENABLED": "false",
                 "SIEVE_PIPELINE__SEMANTIC_DEDUP__ENABLED": "false"}.items():
        monkeypatch.setenv(k, v)
    assert main(["curate", str(mit_sample), "--out", str(out_dir), "--no-progress"]) == 0
    assert f"applying 1 override(s) from {out_dir / 'overrides.jsonl'}" in capsys.readouterr().err
    rejected = {json.loads(x)["id"]: json.loads(x) for x in (out_dir / "rejected.jsonl").read_text().splitlines()}
    assert rejected[acc["id"]]["reasons"] == ["operator_rejected"]
    assert main(["curate", str(mit_sample), "--out", str(out_dir), "--no-progress", "--no-overrides"]) == 0
    assert "applying" not in capsys.readouterr().err
    accepted = [json.loads(x)["id"] for x in (out_dir / "accepted.jsonl").read_text().splitlines()]
    assert acc["id"] in accepted
