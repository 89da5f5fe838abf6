"""How a documented shell command runs in the sandbox: as written, with only the environment swapped.

What the harness changes, and nothing else:

* the placeholder batch ``sieve-batches/000001-ab12cd34`` becomes a real batch of the sandbox;
* a broker address of the pages (``localhost:9092``, ``host:9092``, ``kafka:9092``) becomes the
  test broker's;
* ``sieve review`` gets ``--port 0`` unless it names a port (8765 may be taken on a shared machine).

A command that serves until stopped (``sieve run``, ``sieve batcher``, ``sieve review``, a trainer
following the topic) is a *service*: it must become ready (``/readyz`` answers 200; the review
page answers; the trainer has handled the batches announced), then stop cleanly on the signal
its docs name (SIGTERM; Ctrl-C for ``sieve review``) with exit status 0. Anything else must exit
0 by itself.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from docs_snippets import Command, split_assignments

#: Seconds a one-shot command may take (a curate of ~80 lines, imports of torch and datasets).
COMMAND_TIMEOUT = 300.0
#: Seconds a service may take to become ready (imports, recovery, group join, a batch loaded).
READY_TIMEOUT = 120.0
#: Seconds a service may take to exit after its stop signal.
STOP_TIMEOUT = 60.0
BROKER_PLACEHOLDERS = ("localhost:9092", "host:9092", "kafka:9092")
TRAINER = "python examples/trainer_consumer.py"


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def metrics_ready(log: str, _expected: int) -> bool:
    m = re.search(r"metrics on http://[^:]+:(\d+)/metrics", log)
    return bool(m) and http_status(f"http://127.0.0.1:{m[1]}/readyz") == 200


def review_ready(log: str, _expected: int) -> bool:
    m = re.search(r"serving http://([^/:]+):(\d+)/ \(.*(token required|no token)", log)
    if not m:
        return False
    status = http_status(f"http://127.0.0.1:{m[2]}/")
    return status == (200 if m[3] == "no token" else 401) or (m[3] != "no token" and status == 403)


def trainer_ready(log: str, expected: int) -> bool:
    # the last line of a batch's handling (after its revocations are applied), not its first
    return len(re.findall(r"^batch \S+: loaded, \d+ rows$", log, re.M)) >= expected


@dataclass(frozen=True)
class Service:
    ready: Callable[[str, int], bool]
    stop: signal.Signals


def service_of(command: Command) -> Service | None:
    """How a command that serves until stopped is judged; None for one that exits by itself."""
    words, program = command.words, command.program
    if command.is_help:
        return None
    if program in ("sieve run", "sieve batcher"):
        return Service(metrics_ready, signal.SIGTERM)
    if program == "sieve review" and not any(w.startswith("--force-") for w in words):
        return Service(review_ready, signal.SIGINT)
    if program == TRAINER and "--brokers" in words and not {"--max-batches", "--timeout"} & set(words):
        return Service(trainer_ready, signal.SIGTERM)
    return None


def needs_broker(command: Command) -> bool:
    words, program = command.words, command.program
    if command.is_help:
        return False
    return (program in ("sieve run", "sieve batcher", "sieve demo")
            or (program == "sieve batches cut" and "--dir" not in words)
            or (program == "sieve review" and "--kafka" in words)
            or (program == TRAINER and "--brokers" in words))


def script(command: Command, *, batch: str | None = None, bootstrap: str | None = None) -> str:
    """The bash script that runs ``command``: its block's exports, then the command, swapped as above."""
    text = command.text
    if batch is not None:
        text = text.replace("sieve-batches/000001-ab12cd34", batch)
    if bootstrap is not None:
        for host in BROKER_PLACEHOLDERS:
            text = re.sub(rf"(?<![\w.-]){re.escape(host)}(?![\w.-])", bootstrap, text)
    if command.program == "sieve review" and "--port" not in command.words and not command.is_help:
        text += " --port 0"
    if service_of(command) is not None:  # exec: the signal reaches the program, not a shell around it
        assignments, rest = split_assignments(text)
        text = " ".join([*assignments, "exec", rest])
    return "\n".join([*command.env, text]) + "\n"


def run_once(code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-o", "pipefail", "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT)


def run_service(code: str, service: Service, cwd: Path, env: dict[str, str], log_path: Path,
                expected: int = 1) -> tuple[int, str]:
    """Starts the service, waits until it is ready, stops it; returns its exit status and output.

    Raises:
        AssertionError: it exited before it was ready, or was not ready in time.
    """
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["bash", "-c", code], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    output = lambda: log_path.read_text(errors="replace")  # noqa: E731
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not service.ready(output(), expected):
            assert proc.poll() is None, f"exited {proc.returncode} before it was ready:\n{output()[-4000:]}"
            assert time.monotonic() < deadline, f"not ready after {READY_TIMEOUT}s:\n{output()[-4000:]}"
            time.sleep(0.2)
        proc.send_signal(service.stop)
        return proc.wait(STOP_TIMEOUT), output()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def batch_runs(commands: list[Command], shapes: tuple[str, ...]) -> list[tuple[Command, str | None]]:
    """Each command once, or once per batch shape when it names the placeholder batch."""
    return [(c, s) for c in commands
            for s in (shapes if "sieve-batches/000001-ab12cd34" in c.text else (None,))]


def run_id(item: tuple[Command, str | None]) -> str:
    command, shape = item
    return f"{command.id} {command.program}" + (f" [{shape}]" if shape else "")


def clean_env(env: dict[str, str], extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**{k: v for k, v in env.items()}, **(extra or {}), "TERM": "dumb", "COLUMNS": "100",
            **({"HOME": os.environ["HOME"]} if "HOME" in os.environ else {})}
