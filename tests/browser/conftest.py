"""A real headless chromium (Debian's package) driven by Playwright for Python.

Playwright's own browser download cannot run here, so it launches the system's
chromium (`apt-get install chromium`; `make test-setup` installs it as root). A missing
chromium or Playwright FAILS these tests, saying what to install; it never skips them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Seconds `sieve review` may take to import, load the outputs and print its address.
SERVER_START_TIMEOUT = 60.0
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    """Debian's chromium binary (the wrapper script /usr/bin/chromium execs it)."""
    for candidate in (os.environ.get("SIEVE_TEST_CHROMIUM"), "/usr/lib/chromium/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless chromium through Playwright, for one test module.

    Module scope, not session: Playwright's sync API keeps an event loop running in the
    main thread while it is open, and later tests that call ``asyncio.run`` (the codec
    and stream tests) would fail with "cannot be called from a running event loop".
    """
    path = chromium_path()
    if path is None:
        pytest.fail("chromium not found: install it (Debian: apt-get install chromium; `make test-setup` does as "
                    "root) or point SIEVE_TEST_CHROMIUM at a chromium binary", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -c constraints.txt -e '.[test]'", pytrace=False)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class ReviewProcess:
    """`sieve review ... --port 0` in a subprocess; ``url`` once it serves."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "review", *args, "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                     env={**os.environ, **(env or {})})
        self.url = ""
        self.lines: list[str] = []
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(r"serving (http://\S+/)", line)
            if m:
                self.url = m.group(1)
                threading.Thread(target=self._drain, daemon=True).start()  # a full pipe would block the server
                return
        self.stop()
        raise AssertionError(f"sieve review did not start: {''.join(self.lines)}")

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def review_process():
    started: list[ReviewProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> ReviewProcess:
        p = ReviewProcess(args, env)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()
