import gzip
import json

import pytest

from quality.filemode import curate
from streams.assemble import build_pipeline


def test_every_line_in_exactly_one_output(tmp_path, mit_sample):
    lines = mit_sample.read_bytes().splitlines()
    extra = [b"{bad json", b"[1,2]", b'{"instruction": 5, "output": "x"}', b"\xc3\x28", b"", b"   "]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines + extra) + b"\n")
    gz = tmp_path / "more.jsonl.gz"
    with gzip.open(gz, "wb") as fh:
        fh.write(b'{"id": "gz-1", "instruction": "Name a prime.", "output": "Seven."}\n')
    out = tmp_path / "out"
    summary = curate(build_pipeline(), [src, gz], out)
    seen = []
    for name in ("accepted", "rejected", "dead_letter"):
        for line in (out / f"{name}.jsonl").read_text().splitlines():
            env = json.loads(line)
            assert env["decision"] == name
            seen.append((env["origin"]["file"], env["origin"]["line"]))
    expected = [(str(src), i) for i in range(1, len(lines) + 5)] + [(str(gz), 1)]
    assert sorted(seen) == sorted(expected)  # blank lines skipped, everything else once
    assert summary["total"] == len(expected) and summary["blank_lines_skipped"] == 2
    assert summary["decisions"]["dead_letter"] == 4
    # the sample holds two exact copies ("<id>-dup"); each is a duplicate unless its original was
    # rejected by a later stage (then the copy is decided again, and gets the same fate)
    copies = {json.loads(line)["id"].removesuffix("-dup") for line in lines if b'-dup"' in line}
    accepted = {json.loads(line)["id"] for line in (out / "accepted.jsonl").read_text().splitlines()}
    assert len(copies) == 2
    assert summary["reasons"].get("rejected:duplicate_exact", 0) == len(copies & accepted)
    assert json.loads((out / "summary.json").read_text())["total"] == len(expected)


def test_missing_input_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        curate(build_pipeline(), [tmp_path / "nope.jsonl"], tmp_path / "out")


def test_a_bom_on_the_first_line_is_not_a_dead_letter(tmp_path):
    src = tmp_path / "bom.jsonl"
    src.write_bytes(b'\xef\xbb\xbf{"id": "b1", "instruction": "Name a prime.", "output": "Seven."}\r\n')
    summary = curate(build_pipeline(), [src], tmp_path / "out")
    assert summary["decisions"] == {"accepted": 1}
