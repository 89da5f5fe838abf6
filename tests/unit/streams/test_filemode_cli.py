"""`sieve curate` and `sieve score` as an operator runs them: subprocesses on tests/data slices, models off
(the model is not the point here; tests/models/test_cli_scoring.py runs the real one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "tests" / "data"
#: Seconds one `sieve` subprocess may take without model stages.
CLI_TIMEOUT = 300
CHEAP = {"SIEVE_PIPELINE__SCORING__ENABLED": "false", "SIEVE_PIPELINE__SEMANTIC_DEDUP__ENABLED": "false"}
#: Two sources whose names differ only at their end, past 40 characters (the old bars cut them there).
LONG_A = "example-org/a-dataset-with-a-rather-long-name:train/shard-0001.jsonl"
LONG_B = "example-org/a-dataset-with-a-rather-long-name:train/shard-0002.jsonl"


def sieve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **CHEAP, **(env or {})}, timeout=CLI_TIMEOUT)


def sieve_on_a_terminal(*args: str) -> tuple[int, str, str]:
    """Runs sieve with stderr on a pseudo-terminal (tqdm draws its bar only on a terminal); returns
    the exit status, stdout and what the terminal showed."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a terminal 160 wide
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", *args], stdout=subprocess.PIPE, stderr=follower,
                            cwd=ROOT, env={**os.environ, **CHEAP})
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    out = proc.stdout.read().decode()
    rc = proc.wait(timeout=CLI_TIMEOUT)
    os.close(leader)
    return rc, out, shown.decode(errors="replace")


def lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture
def inputs(tmp_path):
    """The MIT slice (SFT, hh-rlhf pairs, exact copies), and a file of gsm8k rows of that slice under two
    long look-alike source names, whose questions are in the benchmark file: all contaminated."""
    gsm = [r for r in lines(DATA / "mit_sample.jsonl") if r["id"].startswith("gsm8k")][:6]
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"id": f"b{i}", "benchmark": "gsm8k_test", "text": r["instruction"]}) + "\n"
                             for i, r in enumerate(gsm)))
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"id": f"o{i}", "source": LONG_A if i % 2 else LONG_B,
                                         "instruction": r["instruction"], "output": r["output"] + " (checked)"})
                             + "\n" for i, r in enumerate(gsm)))
    return [DATA / "mit_sample.jsonl", other], bench


def test_curate_writes_the_report_and_the_tables(tmp_path, inputs):
    files, bench = inputs
    out = tmp_path / "out"
    done = sieve("curate", *map(str, files), "--out", str(out), "--benchmarks", str(bench), "--no-progress")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["report"] == str(out / "report.html")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reasons_by_source"][LONG_A] == {"rejected:contaminated": 3}
    assert summary["reasons_by_source"][LONG_B] == {"rejected:contaminated": 3}
    assert summary["by_input_file"][str(files[1])]["reasons"] == {"rejected:contaminated": 6}
    assert set(summary["scores_by_kind"]) == {"sft", "preference"}
    assert summary["thresholds"] == {"contamination": 0.8, "near_jaccard": 0.8}
    page = (out / "report.html").read_text()
    for figure in ("decisions", "reasons", "scores-sft", "scores-preference", "lengths-sft", "lengths-preference"):
        assert f'<figure id="{figure}">' in page
    assert f"<td>{LONG_A}</td>" in page and f"<td>{LONG_B}</td>" in page  # whole names in the tables
    assert "<td>rejected:contaminated</td>" not in page  # a column, not a row
    assert "contamination 0.8" in page and "near_jaccard 0.8" in page  # the cuts, as drawn


def test_no_report_removes_a_stale_one(tmp_path, mit_sample):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("an earlier run's report")
    done = sieve("curate", str(mit_sample), "--out", str(out), "--no-progress", "--no-report")
    assert done.returncode == 0, done.stderr
    assert not (out / "report.html").exists() and "report" not in json.loads(done.stdout)


def test_score_output_is_identical_for_batch_sizes_1_7_50_256(tmp_path):
    """Real rows dense in near duplicates (Toolformer), pairs and exact copies (the MIT slice)."""
    src = tmp_path / "in.jsonl"
    src.write_bytes((DATA / "toolformer_head.jsonl").read_bytes() + (DATA / "mit_sample.jsonl").read_bytes())
    outputs, printed = {}, {}
    for size in (1, 7, 50, 256):
        out = tmp_path / f"scored{size}.jsonl"
        done = sieve("score", str(src), "--out", str(out), "--batch-size", str(size), "--no-progress")
        assert done.returncode == 0, done.stderr
        outputs[size], printed[size] = out.read_bytes(), json.loads(done.stdout)
    assert outputs[1] == outputs[7] == outputs[50] == outputs[256]
    envs = [orjson.loads(line) for line in outputs[1].splitlines()]
    assert sum("duplicate_near" in e["reasons"] for e in envs) >= 20
    assert sum("duplicate_exact" in e["reasons"] for e in envs) >= 2
    # the distributions a user calibrates on, by kind: pairs apart from SFT examples
    by_kind = printed[1]["scores_by_kind"]
    assert "length_bias" in by_kind["preference"] and "length_bias" not in by_kind["sft"]
    assert by_kind["sft"]["near_jaccard"]["count"] == sum(1 for e in envs if "messages" in e["example"])
    assert printed[1]["by_kind"]["preference"] == {"accepted": 15}


def test_limit_and_a_progress_bar_with_a_total(tmp_path, mit_sample):
    rc, out, shown = sieve_on_a_terminal("curate", str(mit_sample), "--out", str(tmp_path / "out"), "--limit", "10",
                                         "--no-report")
    assert rc == 0, shown
    assert json.loads(out)["total"] == 10
    assert "10/10 [" in shown and "100%" in shown  # a total: done/total, a percentage, elapsed<remaining
    rc, out, shown = sieve_on_a_terminal("curate", str(mit_sample), "--out", str(tmp_path / "out2"), "--no-report")
    assert rc == 0 and "67/67 [" in shown and "<00:00" in shown
    done = sieve("score", str(mit_sample), "--out", str(tmp_path / "s.jsonl"), "--limit", "5", "--no-progress")
    assert done.returncode == 0 and len((tmp_path / "s.jsonl").read_bytes().splitlines()) == 5


def _unwritable(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # modes do not stop root; nobody can create files under /sys
        return Path("/sys/sieve-test-unwritable/out")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    return ro / "out"


def test_usage_and_io_errors_exit_2_in_one_line_before_any_model_loads(tmp_path, mit_sample):
    """With scoring on and an encoder path that does not exist, a model load would fail with another
    message: each of these must be found first, said in one line, with exit status 2."""
    env = {"SIEVE_PIPELINE__SCORING__ENABLED": "true", "SIEVE_PIPELINE__SCORING__MODEL": str(tmp_path / "no-model")}
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (("curate", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")), "input file not found"),
        (("curate", str(tmp_path), "--out", str(tmp_path / "o")), "is a directory; give the JSONL files"),
        (("curate", str(mit_sample), "--out", str(afile)), "is a file, not a directory"),
        (("curate", str(mit_sample), "--out", str(_unwritable(tmp_path))), "cannot write in"),
        (("curate", str(mit_sample), "--out", str(tmp_path / "o"), "--limit", "0"), "--limit must be > 0"),
        (("curate", str(mit_sample), "--out", str(tmp_path / "o"), "--batch-size", "0"), "--batch-size must be > 0"),
        (("curate", str(mit_sample), "--out", str(tmp_path / "o"), "--benchmarks", str(tmp_path / "nope")),
         "--benchmarks"),
        (("curate", str(mit_sample), "--out", str(tmp_path / "o"), "--batches", str(afile)), "is a file"),
        (("curate", str(mit_sample), "--out", str(tmp_path / "o"), "--batches", str(_unwritable(tmp_path))),
         "--batches"),
        (("score", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "s.jsonl")), "input file not found"),
        (("score", str(mit_sample), "--out", str(tmp_path)), "is a directory: give a file name"),
        (("score", str(mit_sample), "--out", str(afile / "s.jsonl")), "afile is a file, not a directory"),
    ]
    for args, message in cases:
        done = sieve(*args, "--no-progress", env=env)
        err = done.stderr.strip().splitlines()
        assert done.returncode == 2, (args, done.stderr)
        assert len(err) == 1 and err[0].startswith(f"sieve {args[0]}: error: ") and message in err[0], (args, err)
        assert "no-model" not in err[0]
    # an OSError naming a path, met anywhere in a command, is that one line too (sieve's main)
    done = sieve("batches", "cut", "--dir", str(_unwritable(tmp_path)))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("sieve batches: error: ") and "Traceback" not in done.stderr
