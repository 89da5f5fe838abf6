"""The documented commands and blocks a test cannot run, each with the reason (and what tests it instead).

An entry names the page and a regular expression searched in the command's words (``.venv/bin/``
dropped from the program) or in a Python block's text. Every entry must still match something:
tests/docs/test_snippets_static.py fails on a stale one, so the list never hides more than it says.
Everything else in a shell or Python block runs (tests/docs/test_*_snippets.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from docs_snippets import Command, Snippet


@dataclass(frozen=True)
class Allowed:
    page: str
    pattern: str
    reason: str

    def matches(self, page: str, text: str) -> bool:
        return page == self.page and re.search(self.pattern, text, re.M) is not None


_DEMO = ("starts its own Kafka broker, a worker and a producer, and runs until the sample is decided; "
         "tests/integration/test_stream_demo.py runs `sieve demo` end to end")
_DOCKER = ("Docker is not installed here (no daemon, no registry); tests/container builds docker/Dockerfile.cpu "
           "with podman and runs its worker and batcher against the test broker")

ALLOWED: tuple[Allowed, ...] = (
    Allowed("README.md", r"^make demo$", "runs `sieve demo` until the sample is decided, after a full setup; "
                                         + _DEMO),
    Allowed("README.md", r"^make test$", "the whole suite, this test included: it would run itself"),
    Allowed("README.md", r"^sieve demo$", _DEMO),
    Allowed("docs/streams.md", r"^sieve demo( --no-models)?$", _DEMO),
    Allowed("docs/streams.md", r"^python -m pytest ", "runs other test files of the suite, which the suite runs "
                                                      "itself"),
    Allowed("docs/deployment.md", r"^docker (build|run|compose) ", _DOCKER),
    Allowed("docs/deployment.md", r"^podman build ", "builds the CPU image (root, ~7 GB, ~15 min the first time); "
                                                     "tests/container/podman_images.py runs this build"),
    Allowed("docs/eval_heuristics.md", r"^python bench/eval_heuristics\.py ",
            "needs ../shared/data (the development set, not in the repository) and rewrites this page"),
    Allowed("docs/models.md", r"^sieve train-scorer --out models/default_head ",
            "~20 min on the development set (not in the repository) and overwrites the shipped heads; "
            "tests/models/test_cli_scoring.py trains on a slice with the same command"),
    Allowed("docs/security.md", r"^sieve run$", "needs the SASL_SSL cluster the exports name; "
                                                "tests/integration/test_kafka_security.py runs the worker over "
                                                "SASL_SSL from settings alone"),
)


def allow_listed(item: Command | Snippet) -> str | None:
    """The reason ``item`` is not run, or None when it must run."""
    if hasattr(item, "snippet"):  # a Command
        page, text = item.snippet.page, " ".join(item.words)
    else:
        page, text = item.page, item.text
    for entry in ALLOWED:
        if entry.matches(page, text):
            return entry.reason
    return None
