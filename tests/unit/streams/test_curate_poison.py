"""`sieve curate` on the poison corpus: exit 0, a summary, one envelope per non-blank line.

A broken stage is the only thing that stops it (exit 3, no summary).
"""

from __future__ import annotations

import orjson

from poison_corpus import poison_payloads
from streams.cli.main import EXIT_STAGE_BROKEN, main

CHEAP_ENV = {"SIEVE_PIPELINE__SCORING__ENABLED": "false", "SIEVE_PIPELINE__SEMANTIC_DEDUP__ENABLED": "false"}


def test_curate_on_poison_exits_0_with_a_summary_and_one_envelope_per_line(tmp_path, mit_sample, monkeypatch, capsys):
    for k, v in CHEAP_ENV.items():
        monkeypatch.setenv(k, v)
    corpus = poison_payloads()
    real = mit_sample.read_bytes().splitlines()
    lines = [p for _, p, _ in corpus] + real
    src = tmp_path / "poison.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    assert main(["curate", str(src), "--out", str(out), "--no-progress", "--batch-size", "16"]) == 0
    by_line: dict[int, dict] = {}
    for name in ("accepted", "rejected", "dead_letter"):
        for row in (out / f"{name}.jsonl").read_bytes().splitlines():
            env = orjson.loads(row)
            assert env["decision"] == name
            line = env["origin"]["line"]
            assert line not in by_line, f"line {line} decided twice"
            by_line[line] = env
    non_blank = [k for k, p in enumerate(lines, start=1) if p.strip()]
    assert sorted(by_line) == non_blank  # blank lines are skipped, and counted in the summary
    for k, (name, payload, expected) in enumerate(corpus, start=1):
        if expected is not None and payload.strip():
            assert (by_line[k]["decision"], by_line[k]["reasons"][0]) == expected, (name, by_line[k].get("error"))
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["total"] == len(non_blank) and summary["blank_lines_skipped"] == len(lines) - len(non_blank)
    assert (out / "report.html").is_file()  # hostile sources and texts do not stop the run report either
    assert sum(summary["decisions"].values()) == len(non_blank)
    printed = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["total"] == len(non_blank)


def test_curate_with_a_broken_stage_exits_3_naming_it(tmp_path, mit_sample, monkeypatch, capsys):
    import quality.build
    from quality.stage import Stage

    class Broken(Stage):  # a fake on purpose: a real model cannot be broken on demand
        name = "broken_model"

        def check_batch(self, batch):
            raise OSError(28, "No space left on device")

    for k, v in CHEAP_ENV.items():
        monkeypatch.setenv(k, v)
    real_build = quality.build.build_stages
    monkeypatch.setattr(quality.build, "build_stages", lambda *a, **k: real_build(*a, **k) + [Broken()])
    out = tmp_path / "out"
    assert main(["curate", str(mit_sample), "--out", str(out), "--no-progress"]) == EXIT_STAGE_BROKEN
    err = capsys.readouterr().err
    assert "stage 'broken_model' failed on all" in err and "No space left on device" in err and "canary" in err
    assert not (out / "summary.json").exists()


def test_score_on_poison_writes_one_line_per_non_blank_input(tmp_path, monkeypatch):
    for k, v in CHEAP_ENV.items():
        monkeypatch.setenv(k, v)
    lines = [p for _, p, _ in poison_payloads()]
    src = tmp_path / "poison.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "scored.jsonl"
    assert main(["score", str(src), "--out", str(out), "--no-progress"]) == 0
    rows = [orjson.loads(r) for r in out.read_bytes().splitlines()]
    assert [r["origin"]["line"] for r in rows] == [k for k, p in enumerate(lines, start=1) if p.strip()]
