"""A real Prometheus server for the metrics integration tests, and its HTTP query API.

:class:`PrometheusServer` runs the ``prometheus`` binary (Debian package
``prometheus``; ``.ci/run`` installs it) with a generated configuration that scrapes
one target every second, its TSDB in a temporary directory and its web API on a free
loopback port. Tests ask it questions only through ``/api/v1/query``, as a dashboard
or an alert would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

#: Seconds between two scrapes of the worker (and the scrape timeout).
SCRAPE_INTERVAL_S = 1
#: Seconds Prometheus may take to answer /-/ready.
PROMETHEUS_START_TIMEOUT = 30.0
#: Seconds Prometheus may take to stop after SIGTERM.
PROMETHEUS_STOP_TIMEOUT = 15.0
#: Seconds one HTTP request to Prometheus may take.
HTTP_TIMEOUT = 5.0

JOB = "sieve-worker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prometheus_binary() -> str:
    """The path of ``prometheus``: a missing binary fails the test in CI and skips it elsewhere."""
    path = shutil.which("prometheus")
    if path is None:
        msg = ("the Prometheus server binary `prometheus` is not on PATH; install it "
               "(Debian/Ubuntu: apt-get install prometheus; .ci/run does this in CI)")
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return path


def scrape_config(target: str) -> str:
    """A prometheus.yml that scrapes ``target`` (host:port) every :data:`SCRAPE_INTERVAL_S` seconds."""
    return (f"global:\n  scrape_interval: {SCRAPE_INTERVAL_S}s\n  scrape_timeout: {SCRAPE_INTERVAL_S}s\n"
            f"scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [\"{target}\"]\n")


class PrometheusServer:
    """The ``prometheus`` binary scraping one target; its log in ``<workdir>/prometheus.log``."""

    def __init__(self, binary: str, target: str, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(scrape_config(target))
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = PROMETHEUS_START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.base}/-/ready", timeout=HTTP_TIMEOUT) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready after {timeout}s:\n{self.log()[-3000:]}")

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a successful answer."""
        url = f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            raise AssertionError(f"prometheus answered {e.code} to {url}: {e.read()[:500]!r}") from e
        assert body.get("status") == "success", f"{url}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query: a list of ``{"metric": {labels}, "value": [t, "v"]}``."""
        return self.api("query", query=expr)["result"]

    def values(self, expr: str, by: str) -> dict[str, float]:
        """An instant query's values keyed by one label (``by``)."""
        return {r["metric"].get(by, ""): float(r["value"][1]) for r in self.query(expr)}

    def targets(self) -> list[dict]:
        return self.api("targets")["activeTargets"]

    def wait_for(self, what: str, probe: Callable[[], Any], done: Callable[[Any], bool], timeout: float) -> Any:
        """Poll ``probe()`` until ``done(result)``; on timeout fail with the last result and the targets."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = probe()
            if done(last):
                return last
            time.sleep(0.5)
        health = [(t["scrapeUrl"], t["health"], t.get("lastError")) for t in self.targets()]
        raise AssertionError(f"prometheus: {what} not seen within {timeout}s; last answer: {last}; targets: {health}")

    def stop(self, timeout: float = PROMETHEUS_STOP_TIMEOUT) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        finally:
            self._log.close()
