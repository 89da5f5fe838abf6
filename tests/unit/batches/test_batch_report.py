"""The batch report: a self-contained HTML page whose plots are real PNG images."""

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from batches.assembler import BatchAssembler
from quality.filemode import read_records

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ("scores", "lengths", "mix", "reasons", "duplicates")


class _Page(HTMLParser):
    """Collects the figures and images of the page, and checks that tags close in order."""

    VOID = {"img", "meta", "br", "hr", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.stack, self.figures, self.images, self.links = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "figure":
            self.figures.append(attrs.get("id"))
        if tag == "img":
            self.images.append(attrs)
        if tag == "a":
            self.links.append(attrs.get("href"))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"</{tag}> closes nothing open"


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    assert page.stack == [], f"unclosed tags: {page.stack}"
    return page


def _png(src: str) -> bytes:
    assert src.startswith("data:image/png;base64,")
    return base64.b64decode(src.split(",", 1)[1], validate=True)


def _decode_image(data: bytes):
    import io

    from matplotlib.image import imread

    return imread(io.BytesIO(data), format="png")


def test_report_of_real_decisions_has_every_plot(cheap_pipeline, tmp_path, mit_sample):
    pipeline = cheap_pipeline()
    decisions = pipeline.process(list(read_records([mit_sample])))
    a = BatchAssembler(tmp_path / "b", max_examples=0, max_age_s=0)
    a.feed_decisions(decisions, pipeline.versions())
    m = a.close("end_of_input")
    assert m["report"]["path"] == "report.html"
    report = Path(m["location"]["dir"]) / m["report"]["path"]
    assert report.as_uri() == m["report"]["uri"]
    assert any(f["path"] == "report.html" and f["kind"] == "report" for f in m["files"])  # checksummed too
    page = _parse(report.read_text(encoding="utf-8"))
    assert page.figures == list(PLOTS)
    assert len(page.images) == len(PLOTS)
    for img in page.images:
        data = _png(img["src"])
        assert data.startswith(PNG_SIGNATURE)
        pixels = _decode_image(data)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 300  # a drawn figure, not a stub
        assert pixels.std() > 0.01  # not a blank canvas
        assert img["alt"]
    assert "manifest.json" in page.links
    text = report.read_text(encoding="utf-8")
    assert f"Sieve batch {m['batch_id']}" in text
    for f in m["files"][:-1]:  # every shard with its checksum (the report cannot list its own)
        assert f["sha256"] in text


def test_rejections_over_time_when_the_window_spans_minutes(tmp_path):
    t = [1_700_000_000.0]
    a = BatchAssembler(tmp_path / "b", max_examples=0, max_age_s=0, clock=lambda: t[0])
    for minute in range(4):
        t[0] += 60
        a.feed([{"decision": "rejected", "reasons": ["too_short"]}] * (minute + 1)
               + [{"decision": "rejected", "reasons": ["duplicate_exact"]}])
        a.feed([{"id": f"x{minute}", "decision": "accepted", "scores": {"quality": 0.1 * minute},
                 "example": {"messages": [{"role": "user", "content": "Say hi"},
                                          {"role": "assistant", "content": "Hi there!"}]}}])
    m = a.close("request")
    assert m["window"]["reasons"] == {"too_short": 10, "duplicate_exact": 4}
    page = _parse((Path(m["location"]["dir"]) / "report.html").read_text())
    wide = _decode_image(_png(page.images[PLOTS.index("reasons")]["src"]))
    assert wide.shape[1] >= 800  # the totals and the per-minute stack side by side


def test_report_shows_no_content_and_escapes_names(tmp_path):
    secret = "the secret answer is 42, do not leak"
    a = BatchAssembler(tmp_path / "b", max_examples=0, max_age_s=0)
    a.feed([{"id": "x", "decision": "accepted", "source": "<script>alert(1)</script>",
             "metadata": {"category": "<b>bold</b>"},
             "example": {"messages": [{"role": "user", "content": "What is it?"},
                                      {"role": "assistant", "content": secret}]}}])
    m = a.close("request")
    text = (Path(m["location"]["dir"]) / "report.html").read_text()
    assert secret not in text
    assert "<script>" not in text and "<b>bold" not in text
    manifest = json.loads((Path(m["location"]["dir"]) / "manifest.json").read_text())
    assert secret not in json.dumps(manifest)


def test_missing_matplotlib_names_the_install_command(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=re.escape("pip install 'sieve[batches]'")):
        BatchAssembler(tmp_path / "b")
    BatchAssembler(tmp_path / "c", report=False).shutdown()  # reports off: no matplotlib needed


def test_pii_redactions_are_counts_not_histograms(tmp_path):
    """pii_* scores count redactions: the manifest sums them (examples with one, total) and the report
    lists them as counts; only real scores get histograms."""
    a = BatchAssembler(tmp_path / "b", max_examples=0, max_age_s=0)
    ex = {"messages": [{"role": "user", "content": "Who?"}, {"role": "assistant", "content": "Write to [EMAIL]."}]}
    a.feed([{"id": "x1", "decision": "accepted", "scores": {"quality": 0.2, "pii_email": 2.0}, "example": ex},
            {"id": "x2", "decision": "accepted", "scores": {"quality": 0.4, "pii_email": 1.0, "pii_phone": 1.0},
             "example": ex},
            {"id": "x3", "decision": "accepted", "scores": {"quality": 0.6}, "example": ex}])
    m = a.close("request")
    assert m["stats"]["score_counts"] == {"pii_email": {"examples": 2, "total": 3.0},
                                         "pii_phone": {"examples": 1, "total": 1.0}}
    assert set(m["stats"]["scores"]) == {"quality"}
    text = (Path(m["location"]["dir"]) / "report.html").read_text()
    assert "<td>pii_email (counted)</td><td>3 in 2 example(s)</td>" in text
    page = _parse(text)
    assert page.figures == list(PLOTS)


def test_bar_labels_keep_names_whole_and_apart():
    from batches.plots import MAX_LABEL_LINES, label

    a = "example-org/a-dataset-with-a-rather-long-name:train/shard-0001.jsonl"
    b = a.replace("0001", "0002")
    assert label(a).replace("\n", "") == a and label(a) != label(b)  # wrapped, never cut
    assert all(len(line) <= 34 for line in label(a).splitlines())
    huge = "org/" * 100 + "tail-0001"
    lines = label(huge).splitlines()
    assert len(lines) == MAX_LABEL_LINES and lines[-1].endswith("tail-0001") and lines[0].startswith("org/")
    assert label("cost $5 to $9") == r"cost \$5 to \$9"  # not matplotlib math
