"""`sieve run` refuses to start (exit 2, naming the pip package) when a Kafka codec library is missing.

A library is made missing for real in a child process: ``sys.modules[name] = None`` makes
every ``import name`` there fail as if it were not installed (the shared environment keeps it).
The check runs before `sieve run` connects anywhere, so no broker is needed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.codec_check import CODECS, PACKAGES, missing_codecs, require_codecs

ROOT = Path(__file__).resolve().parents[3]
#: `sieve run` with the check failing stops before any network access; a cold import of the clients takes ~1 s.
RUN_TIMEOUT_S = 60


def sieve_run_without(*modules: str) -> subprocess.CompletedProcess:
    hide = "".join(f"sys.modules[{m!r}] = None; " for m in modules)
    code = f"import sys; {hide}from streams.cli import main; sys.exit(main(['run', '--brokers', '127.0.0.1:9']))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIEVE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=RUN_TIMEOUT_S)


def test_every_codec_decodes_in_both_clients_here():
    # the pinned core dependencies are installed: nothing may be missing, and the check passes
    assert missing_codecs() == {}
    require_codecs()
    assert set(CODECS) == {"snappy", "lz4", "zstd"}


@pytest.mark.parametrize("hidden, client, package", [
    # cramjam serves all three codecs of aiokafka, and python-snappy is built on it too
    ("cramjam", "aiokafka cannot decode snappy, lz4, zstd", "pip install cramjam"),
    ("zstandard", "kafka-python cannot decode zstd", "pip install zstandard"),
    ("lz4", "kafka-python cannot decode lz4", "pip install lz4"),
])
def test_sieve_run_exits_2_naming_the_missing_package(hidden, client, package):
    proc = sieve_run_without(hidden)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "sieve run: error: Kafka compression codecs are missing" in proc.stderr
    assert client in proc.stderr and package in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_without_cramjam_kafka_python_loses_snappy_too():
    err = sieve_run_without("cramjam").stderr
    assert "kafka-python cannot decode snappy" in err and "pip install python-snappy" in err
    assert "kafka-python cannot decode lz4" not in err  # its lz4 and zstd libraries do not need cramjam


def test_packages_name_a_library_for_every_codec_of_every_client():
    assert {client: set(codecs) for client, codecs in PACKAGES.items()} == {
        "aiokafka": set(CODECS), "kafka-python": set(CODECS)}
